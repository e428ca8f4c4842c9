// Package storage is the receiptserver's store: every user's latest receipt of each type
// per room and thread, with the depth of its event, so receipts only move forward.
package storage

import (
	"context"
	"database/sql"
)

// Receipt is a stored receipt.
type Receipt struct {
	RoomID   string
	UserID   string
	Type     string
	ThreadID string
	EventID  string
	Depth    int64
	TS       int64
}

// Database is what the receiptserver needs from its store.
type Database interface {
	// MoveReceipt stores r, in tx, if it moves the stored receipt of the same room, user,
	// type and thread forward: to another event at the same or a greater depth. It reports
	// whether it moved.
	MoveReceipt(ctx context.Context, tx *sql.Tx, r *Receipt) (bool, error)
}
