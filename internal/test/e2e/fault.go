package e2e

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

// SendRetrying sends body with one transaction ID until the server acknowledges it: a send
// that failed while a shard was down may or may not have been applied, and retrying the same
// transaction is what makes it exactly once.
func SendRetrying(ctx context.Context, c *mautrix.Client, roomID id.RoomID, body string) (id.EventID, int, error) {
	txn := "txn-" + body
	for failures := 0; ; failures++ {
		res, err := c.SendMessageEvent(ctx, roomID, event.EventMessage, map[string]string{"msgtype": "m.text", "body": body}, mautrix.ReqSendEvent{TransactionID: txn})
		if err == nil {
			return res.EventID, failures, nil
		}
		select {
		case <-ctx.Done():
			return "", failures, fmt.Errorf("send %s: %w (last error: %v)", body, ctx.Err(), err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// TimelineOf is the room's message events as the member sees them by incremental sync from
// since, a limited timeline's gap filled by /messages.
func TimelineOf(t *testing.T, c *mautrix.Client, filterID, since string, roomID id.RoomID, want int) []*event.Event {
	t.Helper()
	var msgs []*event.Event
	deadline := time.Now().Add(30 * time.Second)
	for len(msgs) < want {
		res, err := c.SyncRequest(context.Background(), 1000, since, filterID, false, "")
		if err != nil {
			t.Fatalf("%s syncs: %v", c.UserID, err)
		}
		if room := res.Rooms.Join[roomID]; room != nil {
			events := room.Timeline.Events
			if room.Timeline.Limited {
				// More arrived than a timeline holds (the server caps its limit, docs/limits.md):
				// fill the gap as a client does, back from prev_batch to the previous since.
				events = append(gapOf(t, c, roomID, room.Timeline.PrevBatch, since), events...)
			}
			for _, e := range events {
				if e.Type == event.EventMessage {
					msgs = append(msgs, e)
				}
			}
		}
		since = res.NextBatch
		if time.Now().After(deadline) {
			t.Fatalf("%s sees %d of %d messages", c.UserID, len(msgs), want)
		}
	}
	return msgs
}

// gapOf is a limited timeline's gap, oldest first: the room's events from the sync position
// since up to prevBatch, paged back with /messages.
func gapOf(t *testing.T, c *mautrix.Client, roomID id.RoomID, prevBatch, since string) []*event.Event {
	t.Helper()
	var gap []*event.Event
	for from := prevBatch; from != ""; {
		res, err := c.Messages(context.Background(), roomID, from, since, mautrix.DirectionBackward, nil, 1000)
		if err != nil {
			t.Fatalf("%s pages back: %v", c.UserID, err)
		}
		if len(res.Chunk) == 0 {
			break
		}
		gap = append(gap, res.Chunk...)
		from = res.End
	}
	slices.Reverse(gap)
	return gap
}
