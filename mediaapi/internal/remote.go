package internal

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"time"

	"github.com/matrix-org/gomatrixserverlib/spec"
	"golang.org/x/sync/singleflight"

	"github.com/matrix-org/dendrite/internal/config"
	"github.com/matrix-org/dendrite/internal/matrixerr"
	"github.com/matrix-org/dendrite/mediaapi/storage"
)

// FederationClient is what fetching other servers' media needs from the federation client
// (internal/fedclient, whose connections go through the global.deny_networks dialer).
type FederationClient interface {
	// DownloadMedia is GET /_matrix/federation/v1/media/download/{mediaId}, signed (X-Matrix).
	DownloadMedia(ctx context.Context, origin, destination spec.ServerName, mediaID string) (*http.Response, error)
	// LegacyDownloadMedia is the deprecated GET /_matrix/media/v3/download, for servers
	// without the federation endpoint.
	LegacyDownloadMedia(ctx context.Context, destination spec.ServerName, mediaID string) (*http.Response, error)
}

// Remote fetches other servers' media into the store. Concurrent requests for the same
// media share one fetch; a fetched media is cached (a row and its content) for good.
type Remote struct {
	Client FederationClient
	// HTTP follows the Location a federation answer may give instead of the content; its
	// dialer must refuse global.deny_networks.
	HTTP    *http.Client
	Origin  spec.ServerName
	DB      storage.Database
	Blobs   Blobs
	Cfg     *config.MediaAPI
	Metrics *Metrics
	// Timeout bounds one fetch (the shared fetch outlives the request that started it).
	Timeout time.Duration

	group singleflight.Group
}

// Fetch returns another server's media, fetching it once and caching it: ErrNotFound when
// that server says there is no such media, 502 when it cannot be reached or answers
// nonsense, 502 M_TOO_LARGE beyond max_file_size_bytes.
func (r *Remote) Fetch(ctx context.Context, serverName, mediaID string) (*storage.Media, error) {
	ch := r.group.DoChan(serverName+"/"+mediaID, func() (any, error) {
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), r.Timeout)
		defer cancel()
		if row, err := r.DB.SelectMedia(fctx, serverName, mediaID); err == nil {
			return row, nil // a fetch that ended just before this one stored it
		}
		row, err := r.fetch(fctx, spec.ServerName(serverName), mediaID)
		switch {
		case err == nil:
			r.Metrics.remote("ok")
		case errors.Is(err, storage.ErrNotFound):
			r.Metrics.remote("not_found")
		default:
			r.Metrics.remote("error")
		}
		return row, err
	})
	select {
	case <-ctx.Done():
		return nil, ctx.Err()
	case res := <-ch:
		if res.Err != nil {
			return nil, res.Err
		}
		return res.Val.(*storage.Media), nil
	}
}

// content is a fetched media's bytes and metadata.
type content struct {
	body        io.Reader
	contentType string
	fileName    string
}

func (r *Remote) fetch(ctx context.Context, server spec.ServerName, mediaID string) (*storage.Media, error) {
	res, err := r.Client.DownloadMedia(ctx, r.Origin, server, mediaID)
	if err != nil {
		return nil, matrixerr.BadGateway("the media's server could not be reached")
	}
	defer res.Body.Close() // nolint: errcheck // read below
	var c *content
	switch {
	case res.StatusCode == http.StatusOK:
		c, err = r.multipart(ctx, res)
	case isUnrecognized(res):
		c, err = r.legacy(ctx, server, mediaID)
	case res.StatusCode == http.StatusNotFound:
		return nil, storage.ErrNotFound
	default:
		return nil, matrixerr.BadGateway(fmt.Sprintf("the media's server answered %d", res.StatusCode))
	}
	if err != nil {
		return nil, err
	}
	digest, size, err := r.Blobs.Put(ctx, c.body, r.Cfg.MaxFileSizeBytes)
	if errors.Is(err, ErrTooLarge) {
		return nil, matrixerr.RemoteTooLarge("the remote media is larger than this server fetches")
	}
	if err != nil {
		return nil, matrixerr.BadGateway("reading the media from its server failed")
	}
	if c.contentType == "" {
		c.contentType = "application/octet-stream"
	}
	row := &storage.Media{ServerName: string(server), MediaID: mediaID, ContentType: c.contentType, UploadName: c.fileName,
		Size: size, SHA256: digest, CreatedTS: time.Now().UnixMilli(), AuthenticatedOnly: r.Cfg.FreezeLegacyMedia}
	if err = r.DB.StoreRemoteMedia(ctx, row); err != nil {
		return nil, err
	}
	return row, nil
}

// isUnrecognized is an answer of a server without the federation media endpoint: 404
// M_UNRECOGNIZED (or no JSON error at all), 400 or 405.
func isUnrecognized(res *http.Response) bool {
	switch res.StatusCode {
	case http.StatusBadRequest, http.StatusMethodNotAllowed:
		return true
	case http.StatusNotFound:
		var e struct {
			ErrCode string `json:"errcode"`
		}
		err := json.NewDecoder(io.LimitReader(res.Body, 64<<10)).Decode(&e)
		return err != nil || e.ErrCode == "M_UNRECOGNIZED"
	}
	return false
}

// multipart reads the federation answer: multipart/mixed with a JSON metadata part, then
// the content or a Location to fetch it from.
func (r *Remote) multipart(ctx context.Context, res *http.Response) (*content, error) {
	mediaType, params, err := mime.ParseMediaType(res.Header.Get("Content-Type"))
	if err != nil || mediaType != "multipart/mixed" || params["boundary"] == "" {
		return nil, matrixerr.BadGateway("the media's server did not answer multipart/mixed")
	}
	mr := multipart.NewReader(res.Body, params["boundary"])
	meta, err := mr.NextPart()
	if err != nil {
		return nil, matrixerr.BadGateway("the media's server sent no metadata part")
	}
	if _, err = io.Copy(io.Discard, io.LimitReader(meta, 64<<10)); err != nil {
		return nil, matrixerr.BadGateway("reading the media's metadata failed")
	}
	part, err := mr.NextPart()
	if err != nil {
		return nil, matrixerr.BadGateway("the media's server sent no content part")
	}
	if loc := part.Header.Get("Location"); loc != "" {
		return r.location(ctx, loc)
	}
	return &content{body: part, contentType: part.Header.Get("Content-Type"), fileName: fileName(part.Header.Get("Content-Disposition"))}, nil
}

// location fetches content from the URL a federation answer redirected to; the response
// body stays open until the fetch's context ends.
func (r *Remote) location(ctx context.Context, loc string) (*content, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, loc, nil)
	if err != nil || (req.URL.Scheme != "https" && req.URL.Scheme != "http") {
		return nil, matrixerr.BadGateway("the media's server redirected to an invalid URL")
	}
	res, err := r.HTTP.Do(req)
	if err != nil {
		return nil, matrixerr.BadGateway("the media's redirect could not be followed")
	}
	context.AfterFunc(ctx, func() { _ = res.Body.Close() }) // nolint: errcheck // the fetch is over
	if res.StatusCode != http.StatusOK {
		return nil, matrixerr.BadGateway(fmt.Sprintf("the media's redirect answered %d", res.StatusCode))
	}
	return &content{body: res.Body, contentType: res.Header.Get("Content-Type"), fileName: fileName(res.Header.Get("Content-Disposition"))}, nil
}

// legacy fetches through the deprecated client path; the body stays open until the
// fetch's context ends.
func (r *Remote) legacy(ctx context.Context, server spec.ServerName, mediaID string) (*content, error) {
	res, err := r.Client.LegacyDownloadMedia(ctx, server, mediaID)
	if err != nil {
		return nil, matrixerr.BadGateway("the media's server could not be reached")
	}
	context.AfterFunc(ctx, func() { _ = res.Body.Close() }) // nolint: errcheck // the fetch is over
	switch res.StatusCode {
	case http.StatusOK:
	case http.StatusNotFound:
		return nil, storage.ErrNotFound
	default:
		return nil, matrixerr.BadGateway(fmt.Sprintf("the media's server answered %d", res.StatusCode))
	}
	return &content{body: res.Body, contentType: res.Header.Get("Content-Type"), fileName: fileName(res.Header.Get("Content-Disposition"))}, nil
}

// fileName is the filename of a Content-Disposition header, "" for none.
func fileName(disposition string) string {
	_, params, err := mime.ParseMediaType(disposition)
	if err != nil {
		return ""
	}
	return params["filename"]
}
