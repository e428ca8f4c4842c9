// Package storage is what the search reader stores: every timeline event's place in its
// room (for context around results) and a full-text index of the searchable text of
// messages, room names and topics.
package storage

import (
	"context"
	"database/sql"
	"errors"
)

// Keys that are indexed: the event content field each event type's text comes from.
const (
	KeyBody  = "content.body"
	KeyName  = "content.name"
	KeyTopic = "content.topic"
)

// Orders of search results.
const (
	// OrderRank is best match first.
	OrderRank = "rank"
	// OrderRecent is newest (origin_server_ts) first.
	OrderRecent = "recent"
)

// ErrBadQuery is returned for a query the index cannot run (no words).
var ErrBadQuery = errors.New("search query has no words")

// Event is one timeline event as the index keeps it.
type Event struct {
	EventID        string
	RoomID         string
	Sender         string
	Type           string
	OriginServerTS int64
	// RoomPos orders the events of one room: increasing for new events, decreasing (below
	// zero) for backfilled ones, which are older than everything before them.
	RoomPos int64
	// Key names the content field Text comes from; both are empty for events that are
	// not searchable.
	Key  string
	Text string
}

// Cursor is where a page of results ended: the rank (OrderRank) or timestamp (OrderRecent)
// of its last result, and that result's index ID, which breaks ties.
type Cursor struct {
	Rank float64
	TS   int64
	ID   int64
}

// Query is one search.
type Query struct {
	// Words are the search words as Tokenize returns them; the last one matches as a
	// prefix too. Every word must match.
	Words []string
	// Rooms are where to search (never empty: the caller's rooms).
	Rooms []string
	// Keys, Senders, NotSenders and Types narrow the search when not empty.
	Keys       []string
	Senders    []string
	NotSenders []string
	Types      []string
	Order      string
	// After continues after a previous page's last result.
	After *Cursor
	Limit int
}

// Result is one match.
type Result struct {
	Event
	Rank   float64
	Cursor Cursor
}

// Database is the search reader's storage.
type Database interface {
	// StoreEvents records evs in tx, indexing the text of those that have some. An event
	// already stored is left as it is (replays change nothing).
	StoreEvents(ctx context.Context, tx *sql.Tx, evs []Event) error
	// LowestPos is the lowest RoomPos of the room's stored events, 0 when none is stored.
	LowestPos(ctx context.Context, tx *sql.Tx, roomID string) (int64, error)
	// Redact removes an event's text from the index in tx; the event keeps its place in
	// its room.
	Redact(ctx context.Context, tx *sql.Tx, eventID string) error
	// Search returns up to q.Limit matches in q.Order, after q.After, among the newest
	// matches (a bounded window: sql.Window).
	Search(ctx context.Context, q *Query) ([]Result, error)
	// Count is how many events match q, regardless of q.After and q.Limit, up to the
	// window Search looks at.
	Count(ctx context.Context, q *Query) (int, error)
	// Around returns the IDs of up to before events before and after events after the
	// event at pos in room, nearest first.
	Around(ctx context.Context, roomID string, pos int64, before, after int) (beforeIDs, afterIDs []string, err error)
}
