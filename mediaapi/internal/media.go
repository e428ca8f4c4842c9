package internal

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"mime"
	"regexp"
	"strings"
	"time"

	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/sirupsen/logrus"

	"github.com/matrix-org/dendrite/internal/config"
	"github.com/matrix-org/dendrite/internal/matrixerr"
	"github.com/matrix-org/dendrite/mediaapi/storage"
)

// Media is the media repository: it stores uploads, serves stored media and fetches other
// servers' media through Remote.
type Media struct {
	DB         storage.Database
	Blobs      Blobs
	ServerName spec.ServerName
	Cfg        *config.MediaAPI
	// Remote fetches other servers' media; nil: only our own media is served.
	Remote  *Remote
	Metrics *Metrics
	Logger  *logrus.Entry
}

// mediaIDPattern is what the spec allows in a media ID; the length bound keeps IDs
// usable as file and row keys.
var mediaIDPattern = regexp.MustCompile(`^[A-Za-z0-9_-]{1,255}$`)

// CheckMediaRef validates a server name and media ID from a request path: 400 for an ID
// with characters the spec does not allow (/, .., %, ...) or a malformed server name.
func CheckMediaRef(serverName, mediaID string) error {
	if !mediaIDPattern.MatchString(mediaID) {
		return matrixerr.InvalidParam("the media ID may only hold A-Z, a-z, 0-9, _ and -")
	}
	if _, _, ok := spec.ParseAndValidateServerName(spec.ServerName(serverName)); !ok {
		return matrixerr.InvalidParam("the server name is not valid")
	}
	return nil
}

// newMediaID is 24 random characters of the spec's media ID alphabet.
func newMediaID() string {
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
	b := make([]byte, 24)
	_, _ = rand.Read(b) // crypto/rand never fails on Linux
	for i := range b {
		b[i] = alphabet[int(b[i])%len(alphabet)]
	}
	return string(b)
}

// Upload is a file sent by a user.
type Upload struct {
	UserID string
	// ContentType is the request's Content-Type ("" : application/octet-stream).
	ContentType string
	// FileName is the filename query parameter ("" for none).
	FileName string
	Body     io.Reader
}

func (u *Upload) check() error {
	if u.ContentType == "" {
		u.ContentType = "application/octet-stream"
	}
	if _, _, err := mime.ParseMediaType(u.ContentType); err != nil {
		return matrixerr.BadRequest("the Content-Type is not a valid media type")
	}
	if len(u.FileName) > 255 || strings.ContainsAny(u.FileName, "/\\\x00") {
		return matrixerr.InvalidParam("the filename must be at most 255 bytes without / or \\")
	}
	return nil
}

// put streams an upload's body into the file store: 413 beyond max_file_size_bytes; a
// body cut off or failing to read stores nothing (the caller's read error is returned).
func (m *Media) put(ctx context.Context, body io.Reader) (string, int64, error) {
	digest, size, err := m.Blobs.Put(ctx, body, m.Cfg.MaxFileSizeBytes)
	if errors.Is(err, ErrTooLarge) || isMaxBytes(err) {
		return "", 0, matrixerr.TooLarge(fmt.Sprintf("the file is larger than %d bytes", m.Cfg.MaxFileSizeBytes))
	}
	if err != nil {
		return "", 0, fmt.Errorf("store upload: %w", err)
	}
	return digest, size, nil
}

// Store stores an upload under a new media ID of ours and generates its thumbnails.
func (m *Media) Store(ctx context.Context, u *Upload) (*storage.Media, error) {
	if err := u.check(); err != nil {
		return nil, err
	}
	digest, size, err := m.put(ctx, u.Body)
	if err != nil {
		return nil, err
	}
	row := &storage.Media{ServerName: string(m.ServerName), ContentType: u.ContentType, UploadName: u.FileName, Size: size,
		SHA256: digest, UserID: u.UserID, CreatedTS: time.Now().UnixMilli(), AuthenticatedOnly: m.Cfg.FreezeLegacyMedia}
	for {
		row.MediaID = newMediaID()
		err = m.DB.InsertMedia(ctx, row)
		if !errors.Is(err, storage.ErrExists) {
			break
		}
	}
	if err != nil {
		return nil, err
	}
	m.Metrics.uploaded(size)
	m.pregenerate(ctx, row)
	return row, nil
}

// Reserve reserves a media ID for an asynchronous upload (POST /create): 429 when the user
// has max_pending_uploads waiting already.
func (m *Media) Reserve(ctx context.Context, userID string) (*storage.Media, error) {
	now := time.Now()
	n, err := m.DB.CountPending(ctx, userID, now.UnixMilli())
	if err != nil {
		return nil, err
	}
	if n >= m.Cfg.MaxPendingUploads {
		return nil, matrixerr.LimitExceeded(time.Minute)
	}
	if err = m.DB.DeleteExpired(ctx, now.UnixMilli()); err != nil {
		return nil, err
	}
	row := &storage.Media{ServerName: string(m.ServerName), UserID: userID, CreatedTS: now.UnixMilli(),
		ExpiresTS: now.Add(time.Duration(m.Cfg.UnusedExpiry)).UnixMilli(), AuthenticatedOnly: m.Cfg.FreezeLegacyMedia}
	for {
		row.MediaID = newMediaID()
		err = m.DB.InsertMedia(ctx, row)
		if !errors.Is(err, storage.ErrExists) {
			return row, err
		}
	}
}

// Complete uploads the content of a reserved media ID (PUT /upload/{serverName}/{mediaId}):
// 403 for another server's media or another user's reservation (or an expired one), 409
// M_CANNOT_OVERWRITE_MEDIA when the content is there already.
func (m *Media) Complete(ctx context.Context, serverName, mediaID string, u *Upload) error {
	if err := CheckMediaRef(serverName, mediaID); err != nil {
		return err
	}
	if spec.ServerName(serverName) != m.ServerName {
		return matrixerr.Forbidden("this server only stores its own media")
	}
	if err := u.check(); err != nil {
		return err
	}
	existing, err := m.DB.SelectMedia(ctx, serverName, mediaID)
	switch {
	case errors.Is(err, storage.ErrNotFound):
		return matrixerr.NotFound("no such media ID was reserved")
	case err != nil:
		return err
	case existing.UserID != u.UserID:
		return matrixerr.Forbidden("this media ID was reserved by another user")
	case existing.SHA256 != "":
		return matrixerr.CannotOverwriteMedia("this media ID has its content already")
	}
	digest, size, err := m.put(ctx, u.Body)
	if err != nil {
		return err
	}
	row := &storage.Media{ServerName: serverName, MediaID: mediaID, ContentType: u.ContentType, UploadName: u.FileName, Size: size, SHA256: digest}
	switch err = m.DB.CompleteMedia(ctx, row, u.UserID, time.Now().UnixMilli()); {
	case errors.Is(err, storage.ErrNotFound):
		return matrixerr.Forbidden("this media ID's reservation expired")
	case errors.Is(err, storage.ErrExists):
		return matrixerr.CannotOverwriteMedia("this media ID has its content already")
	case err != nil:
		return err
	}
	m.Metrics.uploaded(size)
	m.pregenerate(ctx, row)
	return nil
}

// maxWait bounds timeout_ms for content not yet uploaded.
const maxWait = time.Minute

// Lookup is what a download asks for.
type Lookup struct {
	ServerName, MediaID string
	// Legacy is an unauthenticated (deprecated) endpoint: media stored under the freeze is
	// not found there.
	Legacy bool
	// AllowRemote fetches another server's media not cached yet (allow_remote).
	AllowRemote bool
	// Wait is how long to wait for the content of a reserved media ID (timeout_ms).
	Wait time.Duration
}

// Find returns a media ID's metadata with its content stored: ours, or another server's,
// fetched once and cached. 404 M_NOT_FOUND when unknown; 504 M_NOT_YET_UPLOADED when a
// reserved ID gets no content within l.Wait.
func (m *Media) Find(ctx context.Context, l Lookup) (*storage.Media, error) {
	if err := CheckMediaRef(l.ServerName, l.MediaID); err != nil {
		return nil, err
	}
	wait := min(max(l.Wait, 0), maxWait)
	deadline := time.Now().Add(wait)
	for delay := 50 * time.Millisecond; ; delay = min(delay*2, time.Second) {
		row, err := m.DB.SelectMedia(ctx, l.ServerName, l.MediaID)
		if errors.Is(err, storage.ErrNotFound) && spec.ServerName(l.ServerName) != m.ServerName && l.AllowRemote && m.Remote != nil {
			row, err = m.Remote.Fetch(ctx, l.ServerName, l.MediaID)
		}
		switch {
		case errors.Is(err, storage.ErrNotFound):
			return nil, matrixerr.NotFound("no such media")
		case err != nil:
			return nil, err
		case l.Legacy && row.AuthenticatedOnly:
			return nil, matrixerr.NotFound("this media is only served through /_matrix/client/v1/media")
		case row.SHA256 != "":
			return row, nil
		case row.ExpiresTS < time.Now().UnixMilli():
			return nil, matrixerr.NotFound("no such media")
		case time.Now().Add(delay).After(deadline):
			return nil, matrixerr.NotYetUploaded("the content has not been uploaded yet")
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(delay):
		}
	}
}

// Open opens a media's content.
func (m *Media) Open(sha string) (io.ReadSeekCloser, error) {
	f, err := m.Blobs.Open(sha)
	if err != nil {
		return nil, fmt.Errorf("open media content %s: %w", sha, err)
	}
	return f, nil
}
