// Package storage is what the push server stores: pushers (and, per user, what is
// pushed to them).
package storage

import (
	"context"

	"github.com/matrix-org/dendrite/pushserver/api"
)

// StoredPusher is a pusher with its owner and the device that registered it.
type StoredPusher struct {
	api.Pusher
	UserID   string
	DeviceID string
}

// Database is the push server's storage.
type Database interface {
	// UpsertPusher stores p, replacing the user's pusher with the same app ID and push
	// key. Unless appendOthers, pushers of other users with that app ID and push key are
	// removed in the same transaction.
	UpsertPusher(ctx context.Context, p *StoredPusher, appendOthers bool) error
	// DeletePusher removes the user's pusher with the app ID and push key, if any.
	DeletePusher(ctx context.Context, userID, appID, pushKey string) error
	// Pushers lists the user's pushers, oldest first.
	Pushers(ctx context.Context, userID string) ([]StoredPusher, error)
}
