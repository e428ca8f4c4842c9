// Package storage is the mediaapi's metadata store: one row per media ID (ours and other
// servers' cached ones) naming the SHA-256 of its bytes in the file store, and one row per
// generated thumbnail. The bytes themselves live in the content-addressed file store
// (mediaapi/internal), never in the database.
package storage

import (
	"context"
	"errors"
)

// ErrNotFound is returned for a media ID or thumbnail that is not stored.
var ErrNotFound = errors.New("media not found")

// ErrExists is returned by InsertMedia when the media ID is taken.
var ErrExists = errors.New("media ID exists")

// Media is one media ID's metadata. SHA256 is empty for an ID reserved by an asynchronous
// upload (POST /create) whose content has not arrived yet.
type Media struct {
	ServerName  string
	MediaID     string
	ContentType string
	// UploadName is the file name the uploader gave, "" for none.
	UploadName string
	Size       int64
	// SHA256 is the hex digest naming the content in the file store.
	SHA256 string
	// UserID uploaded it ("" for remote media).
	UserID string
	// CreatedTS is when it was stored, in milliseconds since the epoch.
	CreatedTS int64
	// ExpiresTS is when a reserved ID with no content yet stops being usable (0: never).
	ExpiresTS int64
	// AuthenticatedOnly media is never served by the unauthenticated legacy endpoints (it
	// was stored while media_api.freeze_legacy_media was on).
	AuthenticatedOnly bool
}

// Thumbnail is one generated thumbnail of a media ID.
type Thumbnail struct {
	ServerName  string
	MediaID     string
	Width       int
	Height      int
	Method      string
	ContentType string
	Size        int64
	SHA256      string
}

// Database is what the mediaapi needs from its store.
type Database interface {
	// InsertMedia stores a new media ID; ErrExists when it is taken.
	InsertMedia(ctx context.Context, m *Media) error
	// StoreRemoteMedia stores or replaces a cached remote media ID.
	StoreRemoteMedia(ctx context.Context, m *Media) error
	// CompleteMedia fills in the content of a reserved media ID (an asynchronous upload) of
	// userID that has none yet and has not expired at nowTS; ErrNotFound when there is no
	// such ID, ErrExists when its content is already there.
	CompleteMedia(ctx context.Context, m *Media, userID string, nowTS int64) error
	// SelectMedia returns a media ID's metadata; ErrNotFound when unknown.
	SelectMedia(ctx context.Context, serverName, mediaID string) (*Media, error)
	// CountPending is how many reserved media IDs of userID wait for content at nowTS.
	CountPending(ctx context.Context, userID string, nowTS int64) (int, error)
	// DeleteExpired removes reserved media IDs that expired before nowTS without content.
	DeleteExpired(ctx context.Context, nowTS int64) error
	// InsertThumbnail stores a thumbnail (a second one of the same size and method is
	// ignored: thumbnails of the same media are identical).
	InsertThumbnail(ctx context.Context, t *Thumbnail) error
	// SelectThumbnails returns every stored thumbnail of a media ID.
	SelectThumbnails(ctx context.Context, serverName, mediaID string) ([]Thumbnail, error)
	// TotalBytes is the size of every stored media's content (for metrics).
	TotalBytes(ctx context.Context) (int64, error)
}
