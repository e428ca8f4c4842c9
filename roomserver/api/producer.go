package api

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/matrix-org/dendrite/internal/eventlog"
	"github.com/matrix-org/dendrite/internal/matrixerr"
)

// Input is the writers' side of TopicInputRoomEvent: it appends a message for the room's
// partition and waits for the owning shard to report what became of it. A client that got a
// result back sees its effect on its next request (read-your-writes, DESIGN.md 5).
type Input struct {
	Log   eventlog.Log
	Topic string // full topic name, with the configured prefix
	Wait  WaitAPI
	// Timeout bounds the wait for the shard's verdict (room_server.input_wait_timeout); 0
	// waits as long as ctx allows. When it expires the event stays in the log and will be
	// processed: the caller gets ErrInputTimeout and may retry (a retried client transaction
	// is deduplicated by its transaction ID).
	Timeout time.Duration
}

// ErrInputTimeout is what a writer answers when the roomserver gave no verdict within the
// input wait timeout: 504 M_UNKNOWN. The spec names no error for this; a 5xx tells the
// client the outcome is unknown and that it may retry.
var ErrInputTimeout = matrixerr.GatewayTimeout("the server did not finish processing the event in time; retry the request")

// InputRoomEvents produces the events and waits for their results.
func (in *Input) InputRoomEvents(ctx context.Context, req *InputRoomEventsRequest) (*InputRoomEventsResponse, error) {
	msg := req.Input
	id := make([]byte, 16)
	_, _ = rand.Read(id) // crypto/rand never fails on Linux
	msg.MessageID = hex.EncodeToString(id)
	value, err := json.Marshal(msg)
	if err != nil {
		return nil, fmt.Errorf("encode input for %s: %w", req.Input.RoomID, err)
	}
	pos, err := in.Log.Produce(ctx, in.Topic, eventlog.Message{Key: []byte(req.Input.RoomID), Value: value})
	if err != nil {
		return nil, fmt.Errorf("produce input for %s: %w", req.Input.RoomID, err)
	}
	waitCtx := ctx
	if in.Timeout > 0 {
		var cancel context.CancelFunc
		waitCtx, cancel = context.WithTimeout(ctx, in.Timeout)
		defer cancel()
	}
	res, err := in.Wait.QueryInputResult(waitCtx, &QueryInputResultRequest{Partition: pos[0].Partition, Offset: pos[0].Offset, MessageID: msg.MessageID})
	// The wait's deadline passed (here, or at the shard it was sent to over internal HTTP)
	// while the caller still waits. waitCtx.Err() is not checked: the response may come
	// before the context's own timer has marked it done.
	if err != nil && errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil {
		return nil, ErrInputTimeout
	}
	if err != nil {
		return nil, fmt.Errorf("wait for input of %s: %w", req.Input.RoomID, err)
	}
	return &InputRoomEventsResponse{Results: res.Results}, nil
}
