// Package appservice is the reader that serves application services (bridges and bots,
// the spec's application service API). It consumes OutputRoomEvent (and, for services
// registered with receive_ephemeral, OutputTypingEvent, OutputReceiptEvent,
// OutputPresenceEvent and OutputSendToDeviceEvent), stores what each registered service is interested in in that
// service's persistent queue, in the transaction that saves the consumer's offset, and sends each queue as PUT
// /_matrix/app/v1/transactions/{txnId} (hs_token as bearer token), one transaction at a
// time per service, in order, retried with exponential backoff while the service is down,
// the same transaction ID and contents on every retry. Its api.QueryAPI asks the services
// about users and aliases in their namespaces, third-party protocols, and pings them. The
// client-server side (as_token authentication, masquerading, registration, exclusive
// namespaces) lives in the clientapi and userapi, which read the same registration files.
package appservice

import (
	"context"
	"time"

	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/sirupsen/logrus"
	"golang.org/x/sync/errgroup"

	"github.com/matrix-org/dendrite/appservice/api"
	"github.com/matrix-org/dendrite/appservice/consumer"
	"github.com/matrix-org/dendrite/appservice/internal"
	assql "github.com/matrix-org/dendrite/appservice/storage/sql"
	eduapi "github.com/matrix-org/dendrite/eduserver/api"
	"github.com/matrix-org/dendrite/internal/config"
	"github.com/matrix-org/dendrite/internal/eventlog"
	"github.com/matrix-org/dendrite/internal/sqlutil"
	presenceapi "github.com/matrix-org/dendrite/presenceserver/api"
	receiptapi "github.com/matrix-org/dendrite/receiptserver/api"
	rsapi "github.com/matrix-org/dendrite/roomserver/api"
)

// Deps is what the appservice component is built from. LogMetrics and Registerer may be
// nil.
type Deps struct {
	Cfg        *config.AppServiceAPI
	ServerName spec.ServerName
	DB         *sqlutil.DB
	Log        eventlog.Log
	LogMetrics *eventlog.Metrics
	// RoomEventsTopic is OutputRoomEvent's full name; TypingTopic, ReceiptsTopic,
	// PresenceTopic and ToDeviceTopic OutputTypingEvent's, OutputReceiptEvent's,
	// OutputPresenceEvent's and OutputSendToDeviceEvent's ("" reads none), for the services
	// that receive ephemeral events.
	RoomEventsTopic, TypingTopic, ReceiptsTopic, PresenceTopic, ToDeviceTopic string
	// Rooms answers rooms' current state and aliases.
	Rooms consumer.Rooms
	// Replay, if set, gives back what a wiped log lost (rsapi.OutputSequence).
	Replay rsapi.ReplayAPI
	// EDUReplay, if set, gives back the OutputSendToDeviceEvent records a wiped log lost
	// (the eduserver's outbox; eduapi.OutputSequence).
	EDUReplay eduapi.ReplayAPI
	// ReceiptReplay, if set, gives back the OutputReceiptEvent records a wiped log lost
	// (the receiptserver's outbox; receiptapi.OutputSequence).
	ReceiptReplay receiptapi.ReplayAPI
	// PresenceReplay, if set, gives back the OutputPresenceEvent records a wiped log lost
	// (the presenceserver's outbox; presenceapi.OutputSequence).
	PresenceReplay presenceapi.ReplayAPI
	// Retention is the event log's: how long a record may be redelivered, so how long the
	// IDs of queued events are remembered.
	Retention time.Duration
	// SkipTLSVerify accepts any certificate from the services (tests on loopback only).
	SkipTLSVerify bool
	Logger        *logrus.Entry
	Registerer    prometheus.Registerer
}

// AppService is a running appservice component.
type AppService struct {
	db        *assql.Database
	queues    *internal.Queues
	queries   *internal.Queries
	consumers []*eventlog.Consumer
	retention time.Duration
	logger    *logrus.Entry
}

// New opens the storage and builds the queues and the consumer; Run starts them.
func New(ctx context.Context, d Deps) (*AppService, error) {
	db, err := assql.Open(ctx, d.DB)
	if err != nil {
		return nil, err
	}
	if d.Logger == nil {
		d.Logger = logrus.NewEntry(logrus.StandardLogger())
	}
	client := internal.NewClient(time.Duration(d.Cfg.RequestTimeout), d.SkipTLSVerify)
	services := d.Cfg.Registrations
	queues := internal.NewQueues(internal.Options{
		DB: db, Client: client, Services: services, MinBackoff: time.Duration(d.Cfg.MinBackoff), MaxBackoff: time.Duration(d.Cfg.MaxBackoff),
		Logger: d.Logger, Metrics: internal.NewMetrics(d.Registerer),
	})
	h := consumer.NewRoomEvents(queues)
	h.ServerName, h.DB, h.Rooms, h.Services, h.Logger = d.ServerName, db, d.Rooms, services, d.Logger
	a := &AppService{db: db, queues: queues, queries: internal.NewQueries(client, services, d.Logger, d.Registerer),
		retention: d.Retention, logger: d.Logger}
	type handler interface {
		Prepare(ctx context.Context, recs []eventlog.Record) (eventlog.Step, error)
	}
	for _, c := range []struct {
		topic string
		h     handler
	}{
		{d.RoomEventsTopic, h},
		{d.TypingTopic, consumer.NewEphemeral(h, consumer.Typing)},
		{d.ReceiptsTopic, consumer.NewEphemeral(h, consumer.Receipts)},
		{d.PresenceTopic, consumer.NewEphemeral(h, consumer.Presence)},
		{d.ToDeviceTopic, consumer.NewEphemeral(h, consumer.ToDevice)},
	} {
		if c.topic == "" {
			continue
		}
		cons, err := eventlog.NewComponentConsumer(ctx, d.Log, d.DB, "appservice", c.topic, nil, d.Logger, d.LogMetrics)
		if err != nil {
			return nil, err
		}
		cons.Prepare = c.h.Prepare
		switch {
		case c.topic == d.RoomEventsTopic && d.Replay != nil:
			cons.Sequenced = rsapi.OutputSequence(d.Replay)
		case c.topic == d.ToDeviceTopic && d.EDUReplay != nil:
			cons.Sequenced = eduapi.OutputSequence(d.EDUReplay)
		case c.topic == d.ReceiptsTopic && d.ReceiptReplay != nil:
			cons.Sequenced = receiptapi.OutputSequence(d.ReceiptReplay)
		case c.topic == d.PresenceTopic && d.PresenceReplay != nil:
			cons.Sequenced = presenceapi.OutputSequence(d.PresenceReplay)
		}
		a.consumers = append(a.consumers, cons)
	}
	return a, nil
}

// API is the component's api.QueryAPI.
func (a *AppService) API() api.QueryAPI {
	return a.queries
}

// Run consumes and sends until ctx ends.
func (a *AppService) Run(ctx context.Context) error {
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return a.queues.Run(ctx) })
	for _, c := range a.consumers {
		g.Go(func() error { return c.Run(ctx) })
	}
	if a.retention > 0 {
		g.Go(func() error { return a.forgetOld(ctx) })
	}
	return g.Wait()
}

// forgetOld drops, every hour, the IDs of events queued longer ago than the log's
// retention: no record that old can be delivered again.
func (a *AppService) forgetOld(ctx context.Context) error {
	t := time.NewTicker(time.Hour)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			if err := a.db.ForgetQueuedBefore(ctx, time.Now().Add(-a.retention)); err != nil && ctx.Err() == nil {
				a.logger.WithError(err).Warn("forgetting old queued event IDs failed")
			}
		}
	}
}
