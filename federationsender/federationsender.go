// Package federationsender is the reader that sends our server's output to other servers.
// It consumes OutputRoomEvent (events our users sent, for every other server joined to the
// room), the EDU servers' outputs (typing, public read receipts, presence, send-to-device
// for remote users) and the userapi's OutputKeyChangeEvent (m.device_list_update and
// m.signing_key_update for every server sharing a room with the user), and, when a
// membership change makes servers room mates, our users' current presence for them; it
// stores what each destination server should get in that server's
// persistent queue, in the transaction that saves the consumer's offset, and sends each
// queue as PUT /_matrix/federation/v1/send transactions with retries, exponential backoff
// and a blacklist for servers that keep failing. See internal/ for the queues and consumer/
// for what goes where.
package federationsender

import (
	"context"
	"time"

	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/sirupsen/logrus"
	"golang.org/x/sync/errgroup"

	eduapi "github.com/matrix-org/dendrite/eduserver/api"
	"github.com/matrix-org/dendrite/federationsender/api"
	"github.com/matrix-org/dendrite/federationsender/consumer"
	"github.com/matrix-org/dendrite/federationsender/internal"
	fsql "github.com/matrix-org/dendrite/federationsender/storage/sql"
	"github.com/matrix-org/dendrite/internal/config"
	"github.com/matrix-org/dendrite/internal/eventlog"
	"github.com/matrix-org/dendrite/internal/sqlutil"
	presenceapi "github.com/matrix-org/dendrite/presenceserver/api"
	receiptapi "github.com/matrix-org/dendrite/receiptserver/api"
	rsapi "github.com/matrix-org/dendrite/roomserver/api"
	uapi "github.com/matrix-org/dendrite/userapi/api"
)

// Topics are the full names (with the prefix) of the topics the federationsender reads.
type Topics struct {
	RoomEvents, Typing, Receipts, Presence, ToDevice, KeyChanges string
}

// TopicsWithPrefix names the topics with the configured prefix.
func TopicsWithPrefix(prefix string) Topics {
	return Topics{RoomEvents: prefix + rsapi.TopicOutputRoomEvent, Typing: prefix + eduapi.TopicOutputTypingEvent,
		Receipts: prefix + receiptapi.TopicOutputReceiptEvent, Presence: prefix + presenceapi.TopicOutputPresenceEvent,
		ToDevice: prefix + eduapi.TopicOutputSendToDeviceEvent, KeyChanges: prefix + uapi.TopicOutputKeyChangeEvent}
}

// Deps is what the federationsender is built from. LogMetrics and Registerer may be nil.
type Deps struct {
	Cfg        *config.FederationSender
	ServerName spec.ServerName
	DB         *sqlutil.DB
	Log        eventlog.Log
	LogMetrics *eventlog.Metrics
	Topics     Topics
	// Rooms answers the current state of rooms seen for the first time and a user's rooms,
	// and replays OutputRoomEvent records a wiped log lost.
	Rooms rsapi.FederationSenderRoomserverAPI
	// Presence, if set, answers our users' current presence, sent to servers that newly
	// share a room with them (only with federation_sender.send_presence on).
	Presence presenceapi.QueryAPI
	// UserReplay, if set, gives back the OutputKeyChangeEvent records a wiped log lost
	// (uapi.OutputSequence).
	UserReplay uapi.ReplayAPI
	// EDUReplay, if set, gives back the OutputSendToDeviceEvent records a wiped log lost
	// (eduapi.OutputSequence).
	EDUReplay eduapi.ReplayAPI
	// ReceiptReplay, if set, gives back the OutputReceiptEvent records a wiped log lost
	// (receiptapi.OutputSequence).
	ReceiptReplay receiptapi.ReplayAPI
	// PresenceReplay, if set, gives back the OutputPresenceEvent records a wiped log lost
	// (presenceapi.OutputSequence).
	PresenceReplay presenceapi.ReplayAPI
	// Client sends the transactions (internal/fedclient, signing as ServerName).
	Client internal.Client
	// RequestTimeout bounds each transaction (30s when 0).
	RequestTimeout time.Duration
	Logger         *logrus.Entry
	Registerer     prometheus.Registerer
}

// FederationSender is a running federationsender.
type FederationSender struct {
	queues    *internal.Queues
	consumers []*eventlog.Consumer
}

// New opens the storage and builds the queues and consumers; Run starts them.
func New(ctx context.Context, d Deps) (*FederationSender, error) {
	db, err := fsql.Open(ctx, d.DB)
	if err != nil {
		return nil, err
	}
	if d.Logger == nil {
		d.Logger = logrus.NewEntry(logrus.StandardLogger())
	}
	timeout := d.RequestTimeout
	if timeout <= 0 {
		timeout = 30 * time.Second
	}
	queues := internal.NewQueues(internal.Options{
		ServerName: d.ServerName, DB: db, Client: d.Client,
		MinBackoff: time.Duration(d.Cfg.MinBackoff), MaxBackoff: time.Duration(d.Cfg.MaxBackoff),
		BlacklistAfter: d.Cfg.BlacklistAfter, BlacklistFor: time.Duration(d.Cfg.BlacklistFor), RequestTimeout: timeout,
		Logger: d.Logger, Metrics: internal.NewMetrics(d.Registerer),
	})
	shared := &consumer.Shared{ServerName: d.ServerName, DB: db, Rooms: d.Rooms, Queues: queues, Logger: d.Logger}
	if d.Cfg.SendPresence {
		shared.Presence = d.Presence
	}
	type handler interface {
		Prepare(ctx context.Context, recs []eventlog.Record) (eventlog.Step, error)
	}
	f := &FederationSender{queues: queues}
	for _, c := range []struct {
		topic string
		h     handler
	}{
		{d.Topics.RoomEvents, consumer.NewRoomEvents(shared)},
		{d.Topics.Typing, consumer.NewTyping(shared)},
		{d.Topics.Receipts, consumer.NewReceipts(shared)},
		{d.Topics.Presence, consumer.NewPresence(shared, d.Cfg.SendPresence)},
		{d.Topics.ToDevice, consumer.NewToDevice(shared)},
		{d.Topics.KeyChanges, consumer.NewKeyChanges(shared)},
	} {
		if c.topic == "" {
			continue // a reader built without this topic (tests of other topics)
		}
		cons, err := eventlog.NewComponentConsumer(ctx, d.Log, d.DB, "federationsender", c.topic, nil, d.Logger, d.LogMetrics)
		if err != nil {
			return nil, err
		}
		cons.Prepare = c.h.Prepare
		switch {
		case c.topic == d.Topics.RoomEvents:
			cons.Sequenced = rsapi.OutputSequence(d.Rooms)
		case c.topic == d.Topics.KeyChanges && d.UserReplay != nil:
			cons.Sequenced = uapi.OutputSequence(d.UserReplay, uapi.TopicOutputKeyChangeEvent)
		case c.topic == d.Topics.ToDevice && d.EDUReplay != nil:
			cons.Sequenced = eduapi.OutputSequence(d.EDUReplay)
		case c.topic == d.Topics.Receipts && d.ReceiptReplay != nil:
			cons.Sequenced = receiptapi.OutputSequence(d.ReceiptReplay)
		case c.topic == d.Topics.Presence && d.PresenceReplay != nil:
			cons.Sequenced = presenceapi.OutputSequence(d.PresenceReplay)
		}
		f.consumers = append(f.consumers, cons)
	}
	return f, nil
}

// API is the federationsender's api.SenderAPI.
func (f *FederationSender) API() api.SenderAPI {
	return f.queues
}

// Run consumes and sends until ctx ends.
func (f *FederationSender) Run(ctx context.Context) error {
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return f.queues.Run(ctx) })
	for _, c := range f.consumers {
		g.Go(func() error { return c.Run(ctx) })
	}
	return g.Wait()
}
