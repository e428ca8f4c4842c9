// Package routing holds the mediaapi's public endpoints: uploads under /_matrix/media,
// the authenticated downloads under /_matrix/client/v1/media, the deprecated
// unauthenticated ones under /_matrix/media/v3 (and r0), and the federation media
// endpoints other servers fetch our media with.
package routing

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"net/textproto"
	"strconv"
	"strings"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/fclient"

	"github.com/matrix-org/dendrite/internal/httputil"
	"github.com/matrix-org/dendrite/internal/matrixerr"
	"github.com/matrix-org/dendrite/mediaapi/internal"
	"github.com/matrix-org/dendrite/mediaapi/storage"
	uapi "github.com/matrix-org/dendrite/userapi/api"
)

// Routing serves the media endpoints.
type Routing struct {
	Media *internal.Media
	// Previewer serves URL previews; nil when media_api.url_preview is off.
	Previewer *internal.Previewer
	// DeviceLookup resolves an access token (401 M_UNKNOWN_TOKEN for an unknown one).
	DeviceLookup func(ctx context.Context, token string) (*uapi.Device, error)
	// Verifier checks the X-Matrix signatures of federation requests (the key ring).
	Verifier gomatrixserverlib.JSONVerifier
}

// Routes are the client media endpoints.
func (rt *Routing) Routes() []httputil.Route {
	auth := func(h func(r *http.Request, dev *uapi.Device) (httputil.Response, error)) httputil.HandlerFunc {
		return httputil.Authenticated(rt.DeviceLookup, h)
	}
	get, post, put := http.MethodGet, http.MethodPost, http.MethodPut
	routes := []httputil.Route{
		{Name: "media_create", Method: post, Path: "/_matrix/media/v1/create", Handler: auth(rt.Create)},
		{Name: "media_config", Method: get, Path: "/_matrix/client/v1/media/config", Handler: auth(rt.Config)},
		{Name: "media_download", Method: get, Path: "/_matrix/client/v1/media/download/{serverName}/{mediaId}", Handler: auth(rt.Download)},
		{Name: "media_download", Method: get, Path: "/_matrix/client/v1/media/download/{serverName}/{mediaId}/{fileName}", Handler: auth(rt.Download)},
		{Name: "media_thumbnail", Method: get, Path: "/_matrix/client/v1/media/thumbnail/{serverName}/{mediaId}", Handler: auth(rt.Thumbnail)},
		{Name: "media_preview_url", Method: get, Path: "/_matrix/client/v1/media/preview_url", Handler: auth(rt.PreviewURL)},
	}
	for _, v := range []string{"v3", "r0"} {
		prefix := "/_matrix/media/" + v
		routes = append(routes,
			httputil.Route{Name: "media_upload", Method: post, Path: prefix + "/upload", Handler: auth(rt.Upload)},
			httputil.Route{Name: "media_upload_async", Method: put, Path: prefix + "/upload/{serverName}/{mediaId}", Handler: auth(rt.UploadAsync)},
			httputil.Route{Name: "media_config_legacy", Method: get, Path: prefix + "/config", Handler: auth(rt.Config)},
			httputil.Route{Name: "media_download_legacy", Method: get, Path: prefix + "/download/{serverName}/{mediaId}", Handler: rt.LegacyDownload},
			httputil.Route{Name: "media_download_legacy", Method: get, Path: prefix + "/download/{serverName}/{mediaId}/{fileName}", Handler: rt.LegacyDownload},
			httputil.Route{Name: "media_thumbnail_legacy", Method: get, Path: prefix + "/thumbnail/{serverName}/{mediaId}", Handler: rt.LegacyThumbnail},
			httputil.Route{Name: "media_preview_url_legacy", Method: get, Path: prefix + "/preview_url", Handler: auth(rt.PreviewURL)},
		)
	}
	return routes
}

// FederationRoutes are the federation media endpoints.
func (rt *Routing) FederationRoutes() []httputil.Route {
	return []httputil.Route{
		{Name: "federation_media_download", Method: http.MethodGet, Path: "/_matrix/federation/v1/media/download/{mediaId}", Handler: rt.federation(rt.FederationDownload)},
		{Name: "federation_media_thumbnail", Method: http.MethodGet, Path: "/_matrix/federation/v1/media/thumbnail/{mediaId}", Handler: rt.federation(rt.FederationThumbnail)},
	}
}

// Config is GET /_matrix/client/v1/media/config (and the legacy one).
func (rt *Routing) Config(*http.Request, *uapi.Device) (httputil.Response, error) {
	return httputil.OK(map[string]int64{"m.upload.size": rt.Media.Cfg.MaxFileSizeBytes}), nil
}

func (rt *Routing) upload(r *http.Request, dev *uapi.Device) (*internal.Upload, error) {
	if r.ContentLength > rt.Media.Cfg.MaxFileSizeBytes {
		return nil, matrixerr.TooLarge("the file is larger than " + strconv.FormatInt(rt.Media.Cfg.MaxFileSizeBytes, 10) + " bytes")
	}
	body := r.Body
	if body == nil {
		body = http.NoBody
	}
	return &internal.Upload{UserID: dev.UserID, ContentType: r.Header.Get("Content-Type"), FileName: r.URL.Query().Get("filename"), Body: body}, nil
}

// Upload is POST /_matrix/media/v3/upload: the body is the file, stored under a new media
// ID; a body cut off before its Content-Length stores nothing.
func (rt *Routing) Upload(r *http.Request, dev *uapi.Device) (httputil.Response, error) {
	u, err := rt.upload(r, dev)
	if err != nil {
		return httputil.Response{}, err
	}
	row, err := rt.Media.Store(r.Context(), u)
	if err != nil {
		return httputil.Response{}, clientGone(r, err)
	}
	return httputil.OK(map[string]string{"content_uri": "mxc://" + row.ServerName + "/" + row.MediaID}), nil
}

// Create is POST /_matrix/media/v1/create: a media ID whose content comes later.
func (rt *Routing) Create(r *http.Request, dev *uapi.Device) (httputil.Response, error) {
	row, err := rt.Media.Reserve(r.Context(), dev.UserID)
	if err != nil {
		return httputil.Response{}, err
	}
	return httputil.OK(map[string]any{"content_uri": "mxc://" + row.ServerName + "/" + row.MediaID, "unused_expires_at": row.ExpiresTS}), nil
}

// UploadAsync is PUT /_matrix/media/v3/upload/{serverName}/{mediaId}.
func (rt *Routing) UploadAsync(r *http.Request, dev *uapi.Device) (httputil.Response, error) {
	u, err := rt.upload(r, dev)
	if err != nil {
		return httputil.Response{}, err
	}
	v := httputil.Vars(r)
	if err = rt.Media.Complete(r.Context(), v["serverName"], v["mediaId"], u); err != nil {
		return httputil.Response{}, clientGone(r, err)
	}
	return httputil.OK(struct{}{}), nil
}

// clientGone turns the read error of an upload the client abandoned into a 400 (nothing
// was stored; the client will not read the answer anyway).
func clientGone(r *http.Request, err error) error {
	var merr *matrixerr.Error
	if errors.As(err, &merr) {
		return err
	}
	if r.Context().Err() != nil || errors.Is(err, io.ErrUnexpectedEOF) {
		return matrixerr.BadRequest("the upload was cut off")
	}
	return err
}

// lookup is the media a download request names.
func lookup(r *http.Request, legacy bool) (internal.Lookup, error) {
	v := httputil.Vars(r)
	q := r.URL.Query()
	l := internal.Lookup{ServerName: v["serverName"], MediaID: v["mediaId"], Legacy: legacy, AllowRemote: q.Get("allow_remote") != "false",
		Wait: 20 * time.Second}
	if s := q.Get("timeout_ms"); s != "" {
		ms, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return l, matrixerr.InvalidParam("timeout_ms must be an integer")
		}
		l.Wait = time.Duration(min(max(ms, 0), 60_000)) * time.Millisecond
	}
	return l, internal.CheckMediaRef(l.ServerName, l.MediaID)
}

// Download is GET /_matrix/client/v1/media/download/{serverName}/{mediaId}[/{fileName}].
func (rt *Routing) Download(r *http.Request, _ *uapi.Device) (httputil.Response, error) {
	return rt.download(r, false)
}

// LegacyDownload is the deprecated unauthenticated GET /_matrix/media/v3/download/...
func (rt *Routing) LegacyDownload(r *http.Request) (httputil.Response, error) {
	return rt.download(r, true)
}

func (rt *Routing) download(r *http.Request, legacy bool) (httputil.Response, error) {
	l, err := lookup(r, legacy)
	if err != nil {
		return httputil.Response{}, err
	}
	row, err := rt.Media.Find(r.Context(), l)
	if err != nil {
		return httputil.Response{}, err
	}
	name := row.UploadName
	if n := httputil.Vars(r)["fileName"]; n != "" {
		name = n
	}
	return rt.serve(row.SHA256, row.ContentType, row.Size, name)
}

// serve answers with stored content and the headers the spec asks for served media.
func (rt *Routing) serve(sha, contentType string, size int64, name string) (httputil.Response, error) {
	f, err := rt.Media.Open(sha)
	if err != nil {
		return httputil.Response{}, err
	}
	rt.Media.Metrics.Downloaded()
	h := mediaHeaders(contentType, name)
	h["Content-Length"] = strconv.FormatInt(size, 10)
	return httputil.Response{Status: http.StatusOK, Headers: h, Write: func(w io.Writer) error {
		defer f.Close() // nolint: errcheck // read-only
		_, err := io.Copy(w, f)
		return err
	}}, nil
}

// inlineTypes are the content types the spec lists as safe to serve inline; everything
// else is served as an attachment.
var inlineTypes = map[string]bool{
	"text/css": true, "text/plain": true, "text/csv": true, "application/json": true, "application/ld+json": true,
	"image/jpeg": true, "image/gif": true, "image/png": true, "image/apng": true, "image/webp": true, "image/avif": true,
	"video/mp4": true, "video/webm": true, "video/ogg": true, "video/quicktime": true,
	"audio/mp4": true, "audio/webm": true, "audio/aac": true, "audio/mpeg": true, "audio/ogg": true, "audio/wave": true,
	"audio/wav": true, "audio/x-wav": true, "audio/x-pn-wav": true, "audio/flac": true, "audio/x-flac": true,
}

// contentSecurityPolicy is the spec's recommended policy for served media.
const contentSecurityPolicy = "sandbox; default-src 'none'; script-src 'none'; plugin-types application/pdf; style-src 'unsafe-inline'; object-src 'self';"

// mediaHeaders are the headers of served media: its type, the disposition (inline only
// for the spec's safe types), and the policies that keep a browser from running it.
func mediaHeaders(contentType, name string) map[string]string {
	disposition := "attachment"
	if mt, _, err := mime.ParseMediaType(contentType); err == nil && inlineTypes[strings.ToLower(mt)] {
		disposition = "inline"
	}
	if name != "" {
		if d := mime.FormatMediaType(disposition, map[string]string{"filename": name}); d != "" {
			disposition = d
		}
	}
	return map[string]string{
		"Content-Type": contentType, "Content-Disposition": disposition,
		"Content-Security-Policy": contentSecurityPolicy, "X-Content-Type-Options": "nosniff",
		"Cross-Origin-Resource-Policy": "cross-origin", "Cache-Control": "private, max-age=86400",
	}
}

// thumbnailParams are a thumbnail request's width, height and method.
func thumbnailParams(r *http.Request) (int, int, string, error) {
	q := r.URL.Query()
	width, err1 := strconv.Atoi(q.Get("width"))
	height, err2 := strconv.Atoi(q.Get("height"))
	if err1 != nil || err2 != nil || width < 1 || height < 1 {
		return 0, 0, "", matrixerr.InvalidParam("width and height must be positive integers")
	}
	method := q.Get("method")
	switch method {
	case "":
		method = "scale"
	case "scale", "crop":
	default:
		return 0, 0, "", matrixerr.InvalidParam("method must be crop or scale")
	}
	return width, height, method, nil
}

// Thumbnail is GET /_matrix/client/v1/media/thumbnail/{serverName}/{mediaId}.
func (rt *Routing) Thumbnail(r *http.Request, _ *uapi.Device) (httputil.Response, error) {
	return rt.thumbnail(r, false)
}

// LegacyThumbnail is the deprecated unauthenticated GET /_matrix/media/v3/thumbnail/...
func (rt *Routing) LegacyThumbnail(r *http.Request) (httputil.Response, error) {
	return rt.thumbnail(r, true)
}

func (rt *Routing) thumbnail(r *http.Request, legacy bool) (httputil.Response, error) {
	width, height, method, err := thumbnailParams(r)
	if err != nil {
		return httputil.Response{}, err
	}
	l, err := lookup(r, legacy)
	if err != nil {
		return httputil.Response{}, err
	}
	row, err := rt.Media.Find(r.Context(), l)
	if err != nil {
		return httputil.Response{}, err
	}
	t, err := rt.Media.Thumbnail(r.Context(), row, width, height, method)
	if err != nil {
		return httputil.Response{}, err
	}
	return rt.serve(t.SHA256, t.ContentType, t.Size, "")
}

// PreviewURL is GET /_matrix/client/v1/media/preview_url (and the legacy
// /_matrix/media/v3/preview_url): the OpenGraph data of ?url=. 404 M_UNRECOGNIZED while
// media_api.url_preview is off; 400 M_MISSING_PARAM without a url, M_INVALID_PARAM for a
// url that is not absolute http(s) or a ts that is not an integer (ts is otherwise
// ignored: the newest preview is served, as the spec allows).
func (rt *Routing) PreviewURL(r *http.Request, dev *uapi.Device) (httputil.Response, error) {
	if rt.Previewer == nil {
		return httputil.Response{}, matrixerr.Unrecognized("URL previews are disabled on this server")
	}
	q := r.URL.Query()
	if ts := q.Get("ts"); ts != "" {
		if _, err := strconv.ParseInt(ts, 10, 64); err != nil {
			return httputil.Response{}, matrixerr.InvalidParam("ts must be an integer")
		}
	}
	raw := q.Get("url")
	if raw == "" {
		return httputil.Response{}, matrixerr.MissingParam("url is required")
	}
	u, err := internal.ParsePreviewURL(raw)
	if err != nil {
		return httputil.Response{}, err
	}
	preview, err := rt.Previewer.Preview(r.Context(), dev.UserID, u)
	if err != nil {
		return httputil.Response{}, err
	}
	return httputil.OK(preview), nil
}

// federation checks a federation request's X-Matrix signature before h runs.
func (rt *Routing) federation(h httputil.HandlerFunc) httputil.HandlerFunc {
	return func(r *http.Request) (httputil.Response, error) {
		if r.Header.Get("Authorization") == "" {
			return httputil.Response{}, matrixerr.Unauthorized("missing X-Matrix Authorization header")
		}
		req, res := fclient.VerifyHTTPRequest(r, time.Now(), rt.Media.ServerName, nil, rt.Verifier)
		if req == nil {
			if res.Code == http.StatusUnauthorized || res.Code == http.StatusBadRequest {
				return httputil.Response{}, matrixerr.Unauthorized("the request's X-Matrix signature is invalid")
			}
			return httputil.Response{}, errors.New("verifying the request signature failed (key lookup)")
		}
		return h(r)
	}
}

// localMedia is the media of ours a federation request names: never another server's
// (no fetching on behalf of others).
func (rt *Routing) localMedia(r *http.Request) (*storage.Media, error) {
	l := internal.Lookup{ServerName: string(rt.Media.ServerName), MediaID: httputil.Vars(r)["mediaId"]}
	if s := r.URL.Query().Get("timeout_ms"); s != "" {
		if ms, err := strconv.ParseInt(s, 10, 64); err == nil {
			l.Wait = time.Duration(min(max(ms, 0), 60_000)) * time.Millisecond
		}
	}
	return rt.Media.Find(r.Context(), l)
}

// FederationDownload is GET /_matrix/federation/v1/media/download/{mediaId}.
func (rt *Routing) FederationDownload(r *http.Request) (httputil.Response, error) {
	row, err := rt.localMedia(r)
	if err != nil {
		return httputil.Response{}, err
	}
	return rt.multipart(row.SHA256, row.ContentType, row.UploadName)
}

// FederationThumbnail is GET /_matrix/federation/v1/media/thumbnail/{mediaId}.
func (rt *Routing) FederationThumbnail(r *http.Request) (httputil.Response, error) {
	width, height, method, err := thumbnailParams(r)
	if err != nil {
		return httputil.Response{}, err
	}
	row, err := rt.localMedia(r)
	if err != nil {
		return httputil.Response{}, err
	}
	t, err := rt.Media.Thumbnail(r.Context(), row, width, height, method)
	if err != nil {
		return httputil.Response{}, err
	}
	return rt.multipart(t.SHA256, t.ContentType, "")
}

// multipart answers a federation media request: multipart/mixed with an (empty) JSON
// metadata part and the content.
func (rt *Routing) multipart(sha, contentType, name string) (httputil.Response, error) {
	f, err := rt.Media.Open(sha)
	if err != nil {
		return httputil.Response{}, err
	}
	rt.Media.Metrics.Downloaded()
	b := make([]byte, 16)
	_, _ = rand.Read(b) // crypto/rand never fails on Linux
	boundary := hex.EncodeToString(b)
	headers := map[string]string{"Content-Type": "multipart/mixed; boundary=" + boundary}
	return httputil.Response{Status: http.StatusOK, Headers: headers, Write: func(w io.Writer) error {
		defer f.Close() // nolint: errcheck // read-only
		mw := multipart.NewWriter(w)
		if err := mw.SetBoundary(boundary); err != nil {
			return err
		}
		meta, err := mw.CreatePart(textproto.MIMEHeader{"Content-Type": {"application/json"}})
		if err != nil {
			return err
		}
		if _, err = meta.Write([]byte("{}")); err != nil {
			return err
		}
		h := textproto.MIMEHeader{"Content-Type": {contentType}}
		if name != "" {
			h.Set("Content-Disposition", mime.FormatMediaType("attachment", map[string]string{"filename": name}))
		}
		part, err := mw.CreatePart(h)
		if err != nil {
			return err
		}
		if _, err = io.Copy(part, f); err != nil {
			return err
		}
		return mw.Close()
	}}, nil
}
