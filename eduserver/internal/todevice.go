package internal

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/matrix-org/dendrite/eduserver/api"
	"github.com/matrix-org/dendrite/eduserver/storage"
	"github.com/matrix-org/dendrite/internal/eventlog"
	uapi "github.com/matrix-org/dendrite/userapi/api"
)

// TxnRetention is how long a send-to-device transaction ID is remembered.
const TxnRetention = 24 * time.Hour

// DeviceLister lists a local user's devices.
type DeviceLister interface {
	QueryDevices(ctx context.Context, req *uapi.QueryDevicesRequest) (*uapi.QueryDevicesResponse, error)
}

// ToDevice expands send-to-device requests into one output message per target device. It
// is the Handle of an eventlog.Consumer, run through Waiter.Prepare: the transaction record
// and the messages, numbered in their partitions and stored in the outbox, commit with the
// offset; the outbox produces them once committed (the consumer's Applied wakes it), and
// the writers waiting for the transactions are woken.
type ToDevice struct {
	DB          storage.Database
	Waiter      *Waiter
	Devices     DeviceLister
	ServerName  string
	OutputTopic string
	Log         eventlog.Log
}

// message is one expanded output message for the target user key, made from its number.
type message struct {
	key string
	out api.OutputSendToDeviceEvent
}

// Handle implements eventlog.Consumer.Handle.
func (t *ToDevice) Handle(ctx context.Context, tx *sql.Tx, recs []eventlog.Record) error {
	for _, rec := range recs {
		var in api.InputSendToDeviceEvent
		if err := json.Unmarshal(rec.Value, &in); err != nil {
			return fmt.Errorf("decode send-to-device input: %w", err)
		}
		if in.Sender == "" || in.TxnID == "" || in.Type == "" {
			return errors.New("send-to-device input without sender, transaction or type")
		}
		fresh, err := t.DB.RecordTransaction(ctx, tx, in.Sender, in.SenderDevice, in.TxnID, rec.Timestamp.UnixMilli())
		if err != nil {
			return eventlog.Retry(err)
		}
		t.Waiter.Took(tx, in.Sender, in.SenderDevice, in.TxnID)
		if !fresh {
			continue
		}
		out, err := t.expand(ctx, &in)
		if err != nil {
			return eventlog.Retry(err)
		}
		for _, m := range out {
			partition := eventlog.PartitionFor([]byte(m.key), t.Log.Partitions(t.OutputTopic))
			if err = t.DB.InsertOutput(ctx, tx, partition, m.key, func(seq int64) ([]byte, error) {
				m.out.Seq = seq
				return json.Marshal(m.out)
			}); err != nil {
				return eventlog.Retry(err)
			}
		}
	}
	return nil
}

// expand turns one request into its per-device messages, in a stable order.
func (t *ToDevice) expand(ctx context.Context, in *api.InputSendToDeviceEvent) ([]message, error) {
	users := make([]string, 0, len(in.Messages))
	for u := range in.Messages {
		users = append(users, u)
	}
	sort.Strings(users)
	var msgs []message
	for _, userID := range users {
		byDevice := in.Messages[userID]
		targets := make([]string, 0, len(byDevice))
		for d := range byDevice {
			targets = append(targets, d)
		}
		sort.Strings(targets)
		for _, d := range targets {
			devices := []string{d}
			if d == "*" && strings.HasSuffix(userID, ":"+t.ServerName) {
				res, err := t.Devices.QueryDevices(ctx, &uapi.QueryDevicesRequest{UserID: userID})
				if err != nil {
					return nil, fmt.Errorf("list devices of %s: %w", userID, err)
				}
				devices = devices[:0]
				for _, dev := range res.Devices {
					devices = append(devices, dev.DeviceID)
				}
			}
			for _, deviceID := range devices {
				msgs = append(msgs, message{key: userID, out: api.OutputSendToDeviceEvent{MessageID: messageID(in, userID, deviceID),
					Sender: in.Sender, Type: in.Type, UserID: userID, DeviceID: deviceID, Content: byDevice[d]}})
			}
		}
	}
	return msgs, nil
}

// messageID is the same for the same request and target, whichever delivery produced it.
func messageID(in *api.InputSendToDeviceEvent, userID, deviceID string) string {
	h := sha256.New()
	for _, part := range []string{in.Sender, in.SenderDevice, in.TxnID, userID, deviceID} {
		h.Write([]byte(part))
		h.Write([]byte{0})
	}
	return base64.RawURLEncoding.EncodeToString(h.Sum(nil)[:18])
}
