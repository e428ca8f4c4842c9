// Package consumer is the search reader's consumer of OutputRoomEvent: it indexes every
// new and backfilled timeline event and removes redacted ones from the index.
package consumer

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/sirupsen/logrus"

	"github.com/matrix-org/dendrite/internal/eventlog"
	rsapi "github.com/matrix-org/dendrite/roomserver/api"
	"github.com/matrix-org/dendrite/searchapi/storage"
)

// typeMessage is the event type of messages (the spec's m.room.message).
const typeMessage = "m.room.message"

// RoomEvents applies OutputRoomEvent records (the Handle of the search reader's
// eventlog.Consumer), in the transaction that saves the offset. Replays change nothing:
// events are stored once by event ID, and removing text already removed is a no-op.
type RoomEvents struct {
	DB     storage.Database
	Logger *logrus.Entry
	// Indexed, if set, is told after each batch is applied (before its commit, so a
	// retried batch is told again) how many events had text indexed and the newest
	// origin_server_ts among its new (not backfilled) events, 0 if none. It feeds metrics.
	Indexed func(n int, newestTS int64)
}

// Handle implements eventlog.Consumer.Handle.
func (c *RoomEvents) Handle(ctx context.Context, tx *sql.Tx, recs []eventlog.Record) error {
	var evs []storage.Event
	var redacts []string
	for _, rec := range recs {
		var out rsapi.OutputRoomEvent
		if err := json.Unmarshal(rec.Value, &out); err != nil {
			return fmt.Errorf("decode output room event: %w", err)
		}
		// A room's events are all in one partition, so the offset orders them; backfilled
		// events, older than everything the room had, go below zero, each before the
		// previous one (the roomserver writes them newest first).
		var ev rsapi.Event
		var pos int64
		var redacted string
		switch out.Type {
		case rsapi.OutputTypeNewRoomEvent:
			if out.NewRoomEvent == nil {
				return fmt.Errorf("%s without its body", out.Type)
			}
			ev, pos, redacted = out.NewRoomEvent.Event, rec.Offset+1, out.NewRoomEvent.RedactsEventID
		case rsapi.OutputTypeBackfilledEvent:
			if out.BackfilledEvent == nil {
				return fmt.Errorf("%s without its body", out.Type)
			}
			ev, pos, redacted = out.BackfilledEvent.Event, -(rec.Offset + 1), out.BackfilledEvent.RedactsEventID
		default:
			c.Logger.WithField("type", out.Type).Debug("skipping unknown output room event type")
			continue
		}
		if ev.PDU == nil {
			return fmt.Errorf("%s without an event", out.Type)
		}
		evs = append(evs, Indexable(ev.PDU, pos))
		if redacted != "" {
			redacts = append(redacts, redacted)
		}
	}
	if err := c.DB.StoreEvents(ctx, tx, evs); err != nil {
		return eventlog.Retry(err)
	}
	for _, id := range redacts {
		if err := c.DB.Redact(ctx, tx, id); err != nil {
			return eventlog.Retry(err)
		}
	}
	if c.Indexed != nil {
		n, newest := 0, int64(0)
		for _, e := range evs {
			if e.Text != "" {
				n++
			}
			if e.RoomPos > 0 {
				newest = max(newest, e.OriginServerTS)
			}
		}
		c.Indexed(n, newest)
	}
	return nil
}

// Indexable is ev as the index keeps it at room position pos, with the words of its
// searchable text: the body of a message, the name of a room name event, the topic of a
// topic event. Encrypted messages (m.room.encrypted) have none the server can read;
// redacted events have none left.
func Indexable(ev gomatrixserverlib.PDU, pos int64) storage.Event {
	out := storage.Event{EventID: ev.EventID(), RoomID: ev.RoomID().String(), Sender: string(ev.SenderID()), Type: ev.Type(),
		OriginServerTS: int64(ev.OriginServerTS()), RoomPos: pos}
	var key, field string
	switch {
	case ev.Type() == typeMessage:
		key, field = storage.KeyBody, "body"
	case ev.Type() == spec.MRoomName && ev.StateKeyEquals(""):
		key, field = storage.KeyName, "name"
	case ev.Type() == spec.MRoomTopic && ev.StateKeyEquals(""):
		key, field = storage.KeyTopic, "topic"
	default:
		return out
	}
	var content map[string]json.RawMessage
	if json.Unmarshal(ev.Content(), &content) != nil {
		return out
	}
	var text string
	if json.Unmarshal(content[field], &text) != nil {
		return out
	}
	if words := storage.IndexText(text); words != "" {
		out.Key, out.Text = key, words
	}
	return out
}
