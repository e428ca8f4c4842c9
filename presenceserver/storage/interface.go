// Package storage is the presenceserver's store: each user's presence, status message and
// when they were last active and last seen.
package storage

import (
	"context"
	"database/sql"
)

// Presence is a user's stored presence.
type Presence struct {
	UserID    string
	Presence  string
	StatusMsg *string
	// LastActiveTS is the last activity (Unix ms); LastSeenTS the last sign the user was
	// connected (activity or a /sync).
	LastActiveTS int64
	LastSeenTS   int64
	// Explicit is true when the user chose Presence (PUT), false when syncing or a timeout
	// set it.
	Explicit bool
	// Remote is true for a user of another server, whose presence only that server changes.
	Remote bool
}

// Database is what the presenceserver needs from its store.
type Database interface {
	// Presence returns the user's presence, nil when never seen; tx may be nil.
	Presence(ctx context.Context, tx *sql.Tx, userID string) (*Presence, error)
	// SetPresence stores p in tx.
	SetPresence(ctx context.Context, tx *sql.Tx, p *Presence) error
	// Stale lists local users not offline whose last activity is before activeBefore or whose
	// last sign of life is before seenBefore, at most limit of them.
	Stale(ctx context.Context, activeBefore, seenBefore int64, limit int) ([]string, error)
}
