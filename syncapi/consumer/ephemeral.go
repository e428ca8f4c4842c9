package consumer

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"time"

	"github.com/sirupsen/logrus"
	"golang.org/x/sync/errgroup"

	eduapi "github.com/matrix-org/dendrite/eduserver/api"
	"github.com/matrix-org/dendrite/internal/eventlog"
	presenceapi "github.com/matrix-org/dendrite/presenceserver/api"
	pushapi "github.com/matrix-org/dendrite/pushserver/api"
	receiptapi "github.com/matrix-org/dendrite/receiptserver/api"
	"github.com/matrix-org/dendrite/syncapi/storage"
)

// Ephemeral consumes the EDU servers' outputs: typing, receipts, send-to-device and
// presence. Each topic's records are decoded (an undecodable one is dead-lettered) and
// written in one transaction with the offset; the writes dedupe, so redelivery changes
// nothing.
type Ephemeral struct {
	consumers    []*eventlog.Consumer
	db           storage.Database
	progress     *eventlog.Progress
	logger       *logrus.Entry
	serverSuffix string
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
	var toDeviceSeq, receiptsSeq, presenceSeq, countsSeq *eventlog.Sequenced
	if replays.ToDevice != nil {
		toDeviceSeq = eduapi.OutputSequence(replays.ToDevice)
	}
	if replays.Receipts != nil {
		receiptsSeq = receiptapi.OutputSequence(replays.Receipts)
	}
	if replays.Presence != nil {
		presenceSeq = presenceapi.OutputSequence(replays.Presence)
	}
	if replays.NotificationCounts != nil {
		countsSeq = pushapi.OutputSequence(replays.NotificationCounts)
	}
	e := &Ephemeral{db: s.DB, progress: s.Progress, logger: s.Logger, serverSuffix: ":" + serverName}
	e.consumers = []*eventlog.Consumer{
		newConsumer(s, topics.Typing, storage.StreamTyping, nil, e.prepareTyping, nil),
		newConsumer(s, topics.Receipts, storage.StreamReceipts, receiptsSeq, e.prepareReceipts, nil),
		newConsumer(s, topics.ToDevice, storage.StreamToDevice, toDeviceSeq, e.prepareToDevice, nil),
		newConsumer(s, topics.Presence, storage.StreamPresence, presenceSeq, e.preparePresence, nil),
		newConsumer(s, topics.NotificationCounts, storage.StreamNotificationCounts, countsSeq, e.prepareCounts, nil),
	}
	return e
}

// Run consumes every partition of the five topics until ctx ends.
func (e *Ephemeral) Run(ctx context.Context) error {
	g, ctx := errgroup.WithContext(ctx)
	for _, c := range e.consumers {
		g.Go(func() error { return c.Run(ctx) })
	}
	return g.Wait()
}

func (e *Ephemeral) prepareTyping(ctx context.Context, recs []eventlog.Record) (writeFunc, error) {
	outs, err := decodeAll(recs, func(o *eduapi.OutputTypingEvent) error {
		if o.RoomID == "" {
			return errors.New("no room")
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	typing := make([]storage.Typing, 0, len(outs))
	for _, o := range outs {
		t := storage.Typing{RoomID: o.RoomID, Users: make([]storage.TypingUser, 0, len(o.Users))}
		for _, u := range o.Users {
			t.Users = append(t.Users, storage.TypingUser{UserID: u.UserID, ExpiresTS: u.ExpiresTS})
		}
		typing = append(typing, t)
	}
	return func(ctx context.Context, offset storage.Offset) (*storage.Applied, error) {
		return e.db.WriteTyping(ctx, typing, offset)
	}, nil
}

func (e *Ephemeral) prepareReceipts(ctx context.Context, recs []eventlog.Record) (writeFunc, error) {
	outs, err := decodeAll(recs, func(o *receiptapi.OutputReceiptEvent) error {
		if o.RoomID == "" || o.UserID == "" || o.EventID == "" || o.Type == "" {
			return errors.New("receipt without room, user, event or type")
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	receipts := make([]storage.Receipt, 0, len(outs))
	for _, o := range outs {
		receipts = append(receipts, storage.Receipt{RoomID: o.RoomID, UserID: o.UserID, Type: o.Type, EventID: o.EventID, ThreadID: o.ThreadID, TS: o.TS})
	}
	return func(ctx context.Context, offset storage.Offset) (*storage.Applied, error) {
		return e.db.WriteReceipts(ctx, receipts, offset)
	}, nil
}

func (e *Ephemeral) prepareToDevice(ctx context.Context, recs []eventlog.Record) (writeFunc, error) {
	outs, err := decodeAll(recs, func(o *eduapi.OutputSendToDeviceEvent) error {
		if o.MessageID == "" || o.UserID == "" || o.DeviceID == "" || !json.Valid(o.Content) {
			return errors.New("to-device message without ID, target or valid content")
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	msgs := make([]storage.ToDeviceMessage, 0, len(outs))
	for _, o := range outs {
		if !strings.HasSuffix(o.UserID, e.serverSuffix) {
			continue // for a remote user: the federation sender's business
		}
		msgs = append(msgs, storage.ToDeviceMessage{MessageID: o.MessageID, UserID: o.UserID, DeviceID: o.DeviceID,
			Sender: o.Sender, Type: o.Type, Content: o.Content})
	}
	return func(ctx context.Context, offset storage.Offset) (*storage.Applied, error) {
		return e.db.WriteToDevice(ctx, msgs, offset)
	}, nil
}

func (e *Ephemeral) preparePresence(ctx context.Context, recs []eventlog.Record) (writeFunc, error) {
	outs, err := decodeAll(recs, func(o *presenceapi.OutputPresenceEvent) error {
		if o.UserID == "" || o.Presence.Presence == "" {
			return errors.New("presence without user or state")
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	presence := make([]storage.Presence, 0, len(outs))
	for _, o := range outs {
		presence = append(presence, storage.Presence{UserID: o.UserID, Presence: o.Presence.Presence, StatusMsg: o.StatusMsg,
			LastActiveTS: o.LastActiveTS, CurrentlyActive: o.CurrentlyActive})
	}
	return func(ctx context.Context, offset storage.Offset) (*storage.Applied, error) {
		return e.db.WritePresence(ctx, presence, offset)
	}, nil
}

// countsWait bounds how long a batch of unread counts waits for the room events before it.
const countsWait = 10 * time.Second

// applyCounts writes the pushserver's counts once the room events consumer has caught up
// with the log: the pushserver counts an event only after reading it from that log, so the
// event that changed the counts is then in the sync stream before them, and an incremental
// sync never shows a room with new counts but without the event that caused them. When the
// room events stay behind longer than countsWait the counts are written anyway.
func (e *Ephemeral) prepareCounts(ctx context.Context, recs []eventlog.Record) (writeFunc, error) {
	if err := e.progress.CatchUp(ctx, countsWait); err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		e.logger.WithError(err).Warn("writing unread counts before the room events they follow")
	}
	outs, err := decodeAll(recs, func(o *pushapi.OutputNotificationData) error {
		if o.UserID == "" || o.RoomID == "" {
			return errors.New("notification counts without user or room")
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	counts := make([]storage.NotificationCounts, 0, len(outs))
	for _, o := range outs {
		threads := make(map[string]storage.Counts, len(o.Threads))
		for t, c := range o.Threads {
			threads[t] = storage.Counts{NotificationCount: c.NotificationCount, HighlightCount: c.HighlightCount}
		}
		counts = append(counts, storage.NotificationCounts{UserID: o.UserID, RoomID: o.RoomID, Threads: threads})
	}
	return func(ctx context.Context, offset storage.Offset) (*storage.Applied, error) {
		return e.db.WriteNotificationCounts(ctx, counts, offset)
	}, nil
}
