// Package internal is the presenceserver's logic: how explicit presence, syncing and time
// change a user's presence, and the sweep that applies the idle and offline timeouts.
package internal

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/matrix-org/dendrite/internal/eventlog"
	"github.com/matrix-org/dendrite/presenceserver/api"
	"github.com/matrix-org/dendrite/presenceserver/storage"
)

// ActiveWindow is how recent the last activity must be for an online user to count as
// currently active.
const ActiveWindow = time.Minute

// Presence applies presence input (the Handle of the presenceserver's eventlog.Consumer),
// sweeps for timeouts and answers queries.
type Presence struct {
	DB         storage.Database
	Log        eventlog.Log
	InputTopic string
	// Outbox numbers and keeps the announcements; it produces them once the consumer's
	// transaction committed (the consumer's Applied wakes it).
	Outbox *eventlog.Outbox
	// Taken records each input's InputID in the transaction that applies it, for the
	// writer that waits for it.
	Taken          *eventlog.Taken
	IdleTimeout    time.Duration
	OfflineTimeout time.Duration
	Logger         *logrus.Entry
}

// Handle implements eventlog.Consumer.Handle. Changes commit with the offset and with their
// announcements, numbered in the outbox, so no loss of the log takes a change back.
func (p *Presence) Handle(ctx context.Context, tx *sql.Tx, recs []eventlog.Record) error {
	for _, rec := range recs {
		var in api.InputPresenceEvent
		if err := json.Unmarshal(rec.Value, &in); err != nil {
			return fmt.Errorf("decode presence input: %w", err)
		}
		if in.UserID == "" {
			return errors.New("presence input without user")
		}
		if err := p.Taken.Take(ctx, tx, in.InputID); err != nil {
			return eventlog.Retry(err)
		}
		old, err := p.DB.Presence(ctx, tx, in.UserID)
		if err != nil {
			return eventlog.Retry(err)
		}
		next, ok := p.apply(old, &in)
		if !ok {
			return fmt.Errorf("presence input of unknown kind %q or presence %q", in.Kind, in.Presence)
		}
		if old != nil && !visibleChange(old, next) && old.LastActiveTS == next.LastActiveTS && old.LastSeenTS == next.LastSeenTS &&
			old.Explicit == next.Explicit && old.Remote == next.Remote {
			continue
		}
		if err = p.DB.SetPresence(ctx, tx, next); err != nil {
			return eventlog.Retry(err)
		}
		if old != nil && !visibleChange(old, next) {
			continue
		}
		out := api.OutputPresenceEvent{Presence: view(next, in.TS), Changed: in.TS}
		if err = p.Outbox.Insert(ctx, tx, in.UserID, func(seq int64) ([]byte, error) {
			out.Seq = seq
			return json.Marshal(out)
		}); err != nil {
			return eventlog.Retry(err)
		}
	}
	return nil
}

// QueryOutputRecords implements api.ReplayAPI from the outbox.
func (p *Presence) QueryOutputRecords(ctx context.Context, req *api.QueryOutputRecordsRequest) (*api.QueryOutputRecordsResponse, error) {
	recs, last, err := p.Outbox.Records(ctx, req.Partition, req.AfterSeq, req.Limit)
	if err != nil {
		return nil, err
	}
	return &api.QueryOutputRecordsResponse{Records: recs, LastSeq: last}, nil
}

// QueryInputTaken implements api.TakenAPI.
func (p *Presence) QueryInputTaken(ctx context.Context, req *api.QueryInputTakenRequest) (*api.QueryInputTakenResponse, error) {
	return p.Taken.QueryInputTaken(ctx, req)
}

// apply is the presence after in; ok is false for input it does not understand.
func (p *Presence) apply(old *storage.Presence, in *api.InputPresenceEvent) (next *storage.Presence, ok bool) {
	n := storage.Presence{UserID: in.UserID, Presence: api.Offline}
	if old != nil {
		n = *old
	}
	switch in.Kind {
	case api.InputKindSet:
		if !validPresence(in.Presence) {
			return nil, false
		}
		n.Presence, n.StatusMsg, n.Explicit = in.Presence, in.StatusMsg, true
		if in.Presence != api.Offline {
			n.LastActiveTS, n.LastSeenTS = max(n.LastActiveTS, in.TS), max(n.LastSeenTS, in.TS)
		}
	case api.InputKindSync:
		if in.Presence != api.Online && in.Presence != api.Unavailable {
			return nil, false
		}
		n.LastSeenTS = max(n.LastSeenTS, in.TS)
		if in.Presence == api.Online {
			n.LastActiveTS = max(n.LastActiveTS, in.TS)
		}
		// A presence the user chose (unavailable, say) outlives syncing, unless the user
		// was offline: then syncing brings them back.
		if !n.Explicit || n.Presence == api.Offline {
			n.Presence, n.Explicit = in.Presence, false
		}
	case api.InputKindRemote:
		if !validPresence(in.Presence) {
			return nil, false
		}
		n.Presence, n.StatusMsg, n.LastActiveTS, n.LastSeenTS, n.Explicit, n.Remote = in.Presence, in.StatusMsg, in.TS, in.TS, true, true
	case api.InputKindTimeout:
		now := in.TS
		switch {
		case n.Remote:
		case n.Presence != api.Offline && now-n.LastSeenTS >= p.OfflineTimeout.Milliseconds():
			n.Presence, n.Explicit = api.Offline, false
		case n.Presence == api.Online && now-n.LastActiveTS >= p.IdleTimeout.Milliseconds():
			n.Presence, n.Explicit = api.Unavailable, false
		}
	default:
		return nil, false
	}
	return &n, true
}

func validPresence(s string) bool {
	return s == api.Online || s == api.Unavailable || s == api.Offline
}

// visibleChange reports whether readers must hear of the change: presence or status, not
// mere activity (which readers show as last_active_ago from the last announcement).
func visibleChange(old, next *storage.Presence) bool {
	if old.Presence != next.Presence {
		return true
	}
	if (old.StatusMsg == nil) != (next.StatusMsg == nil) {
		return true
	}
	return old.StatusMsg != nil && *old.StatusMsg != *next.StatusMsg
}

// view is the presence as clients see it at now (Unix ms).
func view(s *storage.Presence, now int64) api.Presence {
	return api.Presence{UserID: s.UserID, Presence: s.Presence, StatusMsg: s.StatusMsg, LastActiveTS: s.LastActiveTS,
		CurrentlyActive: s.Presence == api.Online && now-s.LastActiveTS < ActiveWindow.Milliseconds()}
}

// QueryPresence implements api.QueryAPI.
func (p *Presence) QueryPresence(ctx context.Context, req *api.QueryPresenceRequest) (*api.QueryPresenceResponse, error) {
	s, err := p.DB.Presence(ctx, nil, req.UserID)
	if err != nil {
		return nil, err
	}
	if s == nil {
		return &api.QueryPresenceResponse{Presence: api.Presence{UserID: req.UserID, Presence: api.Offline}}, nil
	}
	return &api.QueryPresenceResponse{Presence: view(s, time.Now().UnixMilli())}, nil
}

// sweepBatch bounds the users one sweep hands to the consumer.
const sweepBatch = 1000

// Sweep finds, every interval, users whose idle or offline timeout passed and writes a
// timeout input for each to their partition, where the consumer applies it in order with
// everything else the user did.
func (p *Presence) Sweep(ctx context.Context, interval time.Duration) error {
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
		now := time.Now()
		users, err := p.DB.Stale(ctx, now.Add(-p.IdleTimeout).UnixMilli(), now.Add(-p.OfflineTimeout).UnixMilli(), sweepBatch)
		if err == nil && len(users) > 0 {
			msgs := make([]eventlog.Message, 0, len(users))
			for _, u := range users {
				value, _ := json.Marshal(api.InputPresenceEvent{UserID: u, Kind: api.InputKindTimeout, TS: now.UnixMilli()}) // plain struct
				msgs = append(msgs, eventlog.Message{Key: []byte(u), Value: value})
			}
			_, err = p.Log.Produce(ctx, p.InputTopic, msgs...)
		}
		if err != nil && ctx.Err() == nil {
			p.Logger.WithError(err).Warn("presence timeout sweep failed")
		}
	}
}
