package api

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"

	"github.com/matrix-org/dendrite/internal/eventlog"
)

// Input is the writers' side of TopicInputRoomEvent: it appends a message for the room's
// partition and waits for the owning shard to report what became of it. A client that got a
// result back sees its effect on its next request (read-your-writes, DESIGN.md 5).
type Input struct {
	Log   eventlog.Log
	Topic string // full topic name, with the configured prefix
	Wait  WaitAPI
}

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
	res, err := in.Wait.QueryInputResult(ctx, &QueryInputResultRequest{Partition: pos[0].Partition, Offset: pos[0].Offset, MessageID: msg.MessageID})
	if err != nil {
		return nil, fmt.Errorf("wait for input of %s: %w", req.Input.RoomID, err)
	}
	return &InputRoomEventsResponse{Results: res.Results}, nil
}
