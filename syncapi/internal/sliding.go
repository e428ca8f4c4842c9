package internal

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/matrix-org/dendrite/internal/matrixerr"
	"github.com/matrix-org/dendrite/syncapi/storage"
	"github.com/matrix-org/dendrite/syncapi/types"
)

// SlidingRequest is a validated simplified sliding sync request (MSC4186).
type SlidingRequest struct {
	UserID   string
	DeviceID string
	Body     *types.SlidingRequest
	Timeout  time.Duration
}

// connState is what a connection remembers after a response, stored with its pos: the
// rooms sent so far and the list counts last reported.
type connState struct {
	Rooms  map[string]*sentRoom `json:"rooms"`
	Counts map[string]int       `json:"counts"`
}

// sentRoom is what the client has of a room: everything up to stream position Pos, sent
// with timeline limit Limit and required state config Config (types.RequiredState.Key),
// the bump stamp and DM flag it last saw, and, with lazy members, the position of each
// member event it was sent since the room was last sent whole or with a limited timeline
// (when MSC4186 has the client forget its members).
type sentRoom struct {
	Pos     int64            `json:"pos"`
	Limit   int64            `json:"limit"`
	Config  string           `json:"config"`
	Bump    int64            `json:"bump"`
	IsDM    bool             `json:"is_dm"`
	Members map[string]int64 `json:"members,omitempty"`
}

// Sliding answers a sliding sync request. With a pos and nothing new to send it waits, up
// to Timeout, for the notifier, as /sync does. Every response stores the connection's new
// state under a new pos; the pos the request used stays valid (the client may retry with
// it) and older ones of the connection are forgotten.
func (s *Syncer) Sliding(ctx context.Context, req *SlidingRequest) (*types.SlidingResponse, error) {
	prev, since, err := s.loadConnection(ctx, req)
	if err != nil {
		return nil, err
	}
	if td := req.Body.Ext.ToDevice; td != nil && td.On() && td.SincePos > 0 {
		// The device has the messages up to since: the to_device extension's next_batch.
		if err = s.db.AckToDevice(ctx, req.UserID, req.DeviceID, td.SincePos); err != nil {
			return nil, fmt.Errorf("acknowledge to-device messages: %w", err)
		}
	}
	deadline := time.Now().Add(req.Timeout)
	for {
		to, err := s.db.MaxPosition(ctx)
		if err != nil {
			return nil, fmt.Errorf("read stream position: %w", err)
		}
		b := &slidingBuild{s: s, req: req, prev: prev, since: since, to: to}
		res, next, err := b.build(ctx)
		if err != nil {
			return nil, err
		}
		remaining := time.Until(deadline)
		if since == 0 || !b.empty(res) || remaining <= 0 || !s.notifier.Wait(ctx, req.UserID, to, remaining) {
			if err = ctx.Err(); err != nil {
				return nil, err
			}
			return res, s.saveConnection(ctx, req, next, to, res)
		}
	}
}

// loadConnection reads the state behind the request's pos (an empty state and since 0 for
// a new connection, whose earlier positions are then forgotten).
func (s *Syncer) loadConnection(ctx context.Context, req *SlidingRequest) (*connState, int64, error) {
	empty := &connState{Rooms: map[string]*sentRoom{}, Counts: map[string]int{}}
	if req.Body.Pos == "" {
		if err := s.db.PruneSlidingPos(ctx, req.UserID, req.DeviceID, req.Body.ConnID, math.MaxInt64); err != nil {
			return nil, 0, fmt.Errorf("reset sliding sync connection: %w", err)
		}
		return empty, 0, nil
	}
	unknown := matrixerr.UnknownPos("unknown or expired pos: start the connection again without one")
	tok, ok := types.ParseSlidingPos(req.Body.Pos)
	if !ok {
		return nil, 0, unknown
	}
	p, err := s.db.SlidingPos(ctx, tok.ID)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, 0, unknown
	}
	if err != nil {
		return nil, 0, fmt.Errorf("load sliding sync position: %w", err)
	}
	if p.UserID != req.UserID || p.DeviceID != req.DeviceID || p.ConnID != req.Body.ConnID || p.Position != tok.Position {
		return nil, 0, unknown
	}
	if err = json.Unmarshal(p.State, empty); err != nil {
		return nil, 0, fmt.Errorf("decode sliding sync state: %w", err)
	}
	if err = s.db.PruneSlidingPos(ctx, req.UserID, req.DeviceID, req.Body.ConnID, p.ID); err != nil {
		return nil, 0, fmt.Errorf("prune sliding sync positions: %w", err)
	}
	return empty, p.Position, nil
}

// saveConnection stores next under a new pos and writes it into res.
func (s *Syncer) saveConnection(ctx context.Context, req *SlidingRequest, next *connState, to int64, res *types.SlidingResponse) error {
	state, err := json.Marshal(next)
	if err != nil {
		return fmt.Errorf("encode sliding sync state: %w", err)
	}
	id, err := s.db.SaveSlidingPos(ctx, &storage.SlidingPos{UserID: req.UserID, DeviceID: req.DeviceID, ConnID: req.Body.ConnID, Position: to, State: state})
	if err != nil {
		return err
	}
	res.Pos, res.TxnID = types.SlidingPosToken{Position: to, ID: id}.String(), req.Body.TxnID
	return nil
}
