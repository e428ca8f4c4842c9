package consumer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"golang.org/x/sync/errgroup"

	eduapi "github.com/matrix-org/dendrite/eduserver/api"
	"github.com/matrix-org/dendrite/internal/eventlog"
	presenceapi "github.com/matrix-org/dendrite/presenceserver/api"
	pushapi "github.com/matrix-org/dendrite/pushserver/api"
	receiptapi "github.com/matrix-org/dendrite/receiptserver/api"
	"github.com/matrix-org/dendrite/syncapi/storage"
)

// Ephemeral consumes the EDU servers' outputs: typing, receipts, send-to-device and
// presence. Each topic's records are decoded (undecodable ones dead-lettered) and written in
// one transaction with the offset; the writes dedupe, so redelivery changes nothing.
type Ephemeral struct {
	typing, receipts, toDevice, presence, counts partitions
	serverSuffix                                 string
}

// EphemeralTopics are the full names of the topics Ephemeral reads.
type EphemeralTopics struct {
	Typing, Receipts, ToDevice, Presence string
	// NotificationCounts is the pushserver's OutputNotificationData.
	NotificationCounts string
}

// EphemeralReplays are the owners that give back what a wiped log lost, per topic; a nil
// one leaves its topic unnumbered (a wiped log's records beyond the offset are lost).
type EphemeralReplays struct {
	// ToDevice is the eduserver (eduapi.OutputSequence).
	ToDevice eduapi.ReplayAPI
	// Receipts is the receiptserver (receiptapi.OutputSequence).
	Receipts receiptapi.ReplayAPI
	// NotificationCounts is the pushserver (pushapi.OutputSequence).
	NotificationCounts pushapi.ReplayAPI
	// Presence is the presenceserver (presenceapi.OutputSequence).
	Presence presenceapi.ReplayAPI
}

// NewEphemeral builds the consumers; only to-device messages for serverName's users are
// stored. A topic whose owner is in replays is applied by the records' numbers, and what a
// wiped log lost is recovered from the owner.
func NewEphemeral(s Shared, topics EphemeralTopics, serverName string, replays EphemeralReplays) *Ephemeral {
	e := &Ephemeral{typing: newPartitions(s, topics.Typing), receipts: newPartitions(s, topics.Receipts),
		toDevice: newPartitions(s, topics.ToDevice), presence: newPartitions(s, topics.Presence),
		counts: newPartitions(s, topics.NotificationCounts), serverSuffix: ":" + serverName}
	if replays.ToDevice != nil {
		e.toDevice.sequenced = eduapi.OutputSequence(replays.ToDevice).Reporting(s.Logger, s.LogMetrics)
	}
	if replays.Receipts != nil {
		e.receipts.sequenced = receiptapi.OutputSequence(replays.Receipts).Reporting(s.Logger, s.LogMetrics)
	}
	if replays.NotificationCounts != nil {
		e.counts.sequenced = pushapi.OutputSequence(replays.NotificationCounts).Reporting(s.Logger, s.LogMetrics)
	}
	if replays.Presence != nil {
		e.presence.sequenced = presenceapi.OutputSequence(replays.Presence).Reporting(s.Logger, s.LogMetrics)
	}
	return e
}

// Run consumes every partition of the five topics until ctx ends.
func (e *Ephemeral) Run(ctx context.Context) error {
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return e.typing.run(ctx, e.applyTyping) })
	g.Go(func() error { return e.receipts.run(ctx, e.applyReceipts) })
	g.Go(func() error { return e.toDevice.run(ctx, e.applyToDevice) })
	g.Go(func() error { return e.presence.run(ctx, e.applyPresence) })
	g.Go(func() error { return e.counts.run(ctx, e.applyCounts) })
	return g.Wait()
}

// decodeAll decodes every record into T, dead-lettering those that fail to decode or that
// valid rejects.
func decodeAll[T any](p *partitions, recs []eventlog.Record, valid func(*T) error) ([]T, []storage.DeadLetter) {
	var out []T
	var dead []storage.DeadLetter
	for _, rec := range recs {
		var v T
		err := json.Unmarshal(rec.Value, &v)
		if err == nil {
			err = valid(&v)
		}
		if err != nil {
			dead = append(dead, p.deadLetter(rec, fmt.Errorf("decode %s: %w", p.topic, err)))
			continue
		}
		out = append(out, v)
	}
	return out, dead
}

func (e *Ephemeral) applyTyping(ctx context.Context, recs []eventlog.Record, offset storage.Offset) (*storage.Applied, error) {
	outs, dead := decodeAll(&e.typing, recs, func(o *eduapi.OutputTypingEvent) error {
		if o.RoomID == "" {
			return errors.New("no room")
		}
		return nil
	})
	typing := make([]storage.Typing, 0, len(outs))
	for _, o := range outs {
		t := storage.Typing{RoomID: o.RoomID, Users: make([]storage.TypingUser, 0, len(o.Users))}
		for _, u := range o.Users {
			t.Users = append(t.Users, storage.TypingUser{UserID: u.UserID, ExpiresTS: u.ExpiresTS})
		}
		typing = append(typing, t)
	}
	return e.typing.db.WriteTyping(ctx, typing, dead, offset)
}

func (e *Ephemeral) applyReceipts(ctx context.Context, recs []eventlog.Record, offset storage.Offset) (*storage.Applied, error) {
	outs, dead := decodeAll(&e.receipts, recs, func(o *receiptapi.OutputReceiptEvent) error {
		if o.RoomID == "" || o.UserID == "" || o.EventID == "" || o.Type == "" {
			return errors.New("receipt without room, user, event or type")
		}
		return nil
	})
	receipts := make([]storage.Receipt, 0, len(outs))
	for _, o := range outs {
		receipts = append(receipts, storage.Receipt{RoomID: o.RoomID, UserID: o.UserID, Type: o.Type, EventID: o.EventID, ThreadID: o.ThreadID, TS: o.TS})
	}
	return e.receipts.db.WriteReceipts(ctx, receipts, dead, offset)
}

func (e *Ephemeral) applyToDevice(ctx context.Context, recs []eventlog.Record, offset storage.Offset) (*storage.Applied, error) {
	outs, dead := decodeAll(&e.toDevice, recs, func(o *eduapi.OutputSendToDeviceEvent) error {
		if o.MessageID == "" || o.UserID == "" || o.DeviceID == "" || !json.Valid(o.Content) {
			return errors.New("to-device message without ID, target or valid content")
		}
		return nil
	})
	msgs := make([]storage.ToDeviceMessage, 0, len(outs))
	for _, o := range outs {
		if !strings.HasSuffix(o.UserID, e.serverSuffix) {
			continue // for a remote user: the federation sender's business
		}
		msgs = append(msgs, storage.ToDeviceMessage{MessageID: o.MessageID, UserID: o.UserID, DeviceID: o.DeviceID,
			Sender: o.Sender, Type: o.Type, Content: o.Content})
	}
	return e.toDevice.db.WriteToDevice(ctx, msgs, dead, offset)
}

func (e *Ephemeral) applyPresence(ctx context.Context, recs []eventlog.Record, offset storage.Offset) (*storage.Applied, error) {
	outs, dead := decodeAll(&e.presence, recs, func(o *presenceapi.OutputPresenceEvent) error {
		if o.UserID == "" || o.Presence.Presence == "" {
			return errors.New("presence without user or state")
		}
		return nil
	})
	presence := make([]storage.Presence, 0, len(outs))
	for _, o := range outs {
		presence = append(presence, storage.Presence{UserID: o.UserID, Presence: o.Presence.Presence, StatusMsg: o.StatusMsg,
			LastActiveTS: o.LastActiveTS, CurrentlyActive: o.CurrentlyActive})
	}
	return e.presence.db.WritePresence(ctx, presence, dead, offset)
}

// countsWait bounds how long a batch of unread counts waits for the room events before it.
const countsWait = 10 * time.Second

// applyCounts writes the pushserver's counts once the room events consumer has caught up
// with the log: the pushserver counts an event only after reading it from that log, so the
// event that changed the counts is then in the sync stream before them, and an incremental
// sync never shows a room with new counts but without the event that caused them. When the
// room events stay behind longer than countsWait the counts are written anyway.
func (e *Ephemeral) applyCounts(ctx context.Context, recs []eventlog.Record, offset storage.Offset) (*storage.Applied, error) {
	if err := e.counts.progress.CatchUp(ctx, countsWait); err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		e.counts.logger.WithError(err).Warn("writing unread counts before the room events they follow")
	}
	outs, dead := decodeAll(&e.counts, recs, func(o *pushapi.OutputNotificationData) error {
		if o.UserID == "" || o.RoomID == "" {
			return errors.New("notification counts without user or room")
		}
		return nil
	})
	counts := make([]storage.NotificationCounts, 0, len(outs))
	for _, o := range outs {
		threads := make(map[string]storage.Counts, len(o.Threads))
		for t, c := range o.Threads {
			threads[t] = storage.Counts{NotificationCount: c.NotificationCount, HighlightCount: c.HighlightCount}
		}
		counts = append(counts, storage.NotificationCounts{UserID: o.UserID, RoomID: o.RoomID, Threads: threads})
	}
	return e.counts.db.WriteNotificationCounts(ctx, counts, dead, offset)
}
