// Package internal is the eduserver's logic: typing state with timeouts that expire by
// themselves, and the expansion of send-to-device requests into per-device messages.
package internal

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/matrix-org/dendrite/eduserver/api"
	"github.com/matrix-org/dendrite/internal/eventlog"
)

// DefaultTypingTimeout is a typing notification's lifetime when the client gives none.
const DefaultTypingTimeout = 30 * time.Second

// Typing keeps, in memory, who is typing in each room until when, and writes the room's
// complete set to the output topic after every change, including each expiry. Its input is
// read by an eventlog.Consumer with FromEnd (typing from before the start has expired or
// will be repeated by clients) whose Prepare is Typing.Prepare.
type Typing struct {
	log         eventlog.Log
	outputTopic string
	maxTimeout  time.Duration
	logger      *logrus.Entry

	mu    sync.Mutex
	rooms map[string]map[string]int64 // room ID -> user ID -> expiry (Unix ms)
	// wake tells the expiry loop that an earlier expiry may exist.
	wake chan struct{}
}

// NewTyping is the typing state, publishing to outputTopic of log; maxTimeout caps the
// timeout a client asks for.
func NewTyping(log eventlog.Log, outputTopic string, maxTimeout time.Duration, logger *logrus.Entry) *Typing {
	return &Typing{log: log, outputTopic: outputTopic, maxTimeout: maxTimeout, logger: logger,
		rooms: map[string]map[string]int64{}, wake: make(chan struct{}, 1)}
}

// Run expires typing users until ctx ends.
func (t *Typing) Run(ctx context.Context) error {
	err := t.expireLoop(ctx)
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}

// Prepare is the input consumer's only phase (the state is in memory, no transaction): it
// applies a batch and publishes every room it touched. Publishing complete sets makes a
// retried batch harmless. An undecodable input is dead-lettered (eventlog.Poison).
func (t *Typing) Prepare(ctx context.Context, recs []eventlog.Record) (eventlog.Step, error) {
	ins := make([]api.InputTypingEvent, 0, len(recs))
	for _, rec := range recs {
		var in api.InputTypingEvent
		if err := json.Unmarshal(rec.Value, &in); err != nil {
			return eventlog.Step{}, eventlog.Poison(fmt.Errorf("decode typing input: %w", err))
		}
		if in.RoomID == "" || in.UserID == "" {
			return eventlog.Step{}, eventlog.Poison(errors.New("typing input without room or user"))
		}
		ins = append(ins, in)
	}
	var touched []string
	now := time.Now().UnixMilli()
	t.mu.Lock()
	for i := range ins {
		t.apply(&ins[i], now)
		if !slices.Contains(touched, ins[i].RoomID) {
			touched = append(touched, ins[i].RoomID)
		}
	}
	t.mu.Unlock()
	select {
	case t.wake <- struct{}{}:
	default:
	}
	if err := t.publish(ctx, touched); err != nil {
		return eventlog.Step{}, eventlog.Retry(err)
	}
	return eventlog.Step{}, nil
}

// apply changes the room's set; t.mu must be held. The user's latest input decides: one
// that has expired by the time it is applied (a loaded or lagging consumer) ends the
// user's typing, as its expiry would have, rather than leaving an earlier, longer one.
func (t *Typing) apply(in *api.InputTypingEvent, now int64) {
	users := t.rooms[in.RoomID]
	// Clamped in milliseconds: a client's huge timeout would overflow a Duration.
	timeout := DefaultTypingTimeout
	if in.TimeoutMS > 0 {
		timeout = time.Duration(min(in.TimeoutMS, t.maxTimeout.Milliseconds())) * time.Millisecond
	}
	timeout = min(timeout, t.maxTimeout)
	expires := in.OriginTS + timeout.Milliseconds()
	if !in.Typing || expires <= now {
		delete(users, in.UserID)
		if len(users) == 0 {
			delete(t.rooms, in.RoomID)
		}
		return
	}
	if users == nil {
		users = map[string]int64{}
		t.rooms[in.RoomID] = users
	}
	users[in.UserID] = expires
}

// publish writes the current set of each room.
func (t *Typing) publish(ctx context.Context, roomIDs []string) error {
	if len(roomIDs) == 0 {
		return nil
	}
	msgs := make([]eventlog.Message, 0, len(roomIDs))
	t.mu.Lock()
	for _, roomID := range roomIDs {
		out := api.OutputTypingEvent{RoomID: roomID, Users: []api.TypingUser{}}
		for u, exp := range t.rooms[roomID] {
			out.Users = append(out.Users, api.TypingUser{UserID: u, ExpiresTS: exp})
		}
		slices.SortFunc(out.Users, func(a, b api.TypingUser) int { return strings.Compare(a.UserID, b.UserID) })
		value, err := json.Marshal(out)
		if err != nil {
			t.mu.Unlock()
			return err
		}
		msgs = append(msgs, eventlog.Message{Key: []byte(roomID), Value: value})
	}
	t.mu.Unlock()
	_, err := t.log.Produce(ctx, t.outputTopic, msgs...)
	return err
}

// expireLoop removes users whose timeout passed, at the earliest expiry, and publishes the
// rooms it changed. A failed publication is retried.
func (t *Typing) expireLoop(ctx context.Context) error {
	var pending []string
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		now := time.Now().UnixMilli()
		next := now + time.Hour.Milliseconds()
		t.mu.Lock()
		for roomID, users := range t.rooms {
			for u, exp := range users {
				if exp <= now {
					delete(users, u)
					if !slices.Contains(pending, roomID) {
						pending = append(pending, roomID)
					}
				} else {
					next = min(next, exp)
				}
			}
			if len(users) == 0 {
				delete(t.rooms, roomID)
			}
		}
		t.mu.Unlock()
		if err := t.publish(ctx, pending); err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			t.logger.WithError(err).Warn("publishing expired typing failed; retrying")
			next = min(next, now+time.Second.Milliseconds())
		} else {
			pending = pending[:0]
		}
		timer.Reset(time.Duration(next-now) * time.Millisecond)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.wake:
		case <-timer.C:
		}
	}
}
