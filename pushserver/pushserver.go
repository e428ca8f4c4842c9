// Package pushserver is the push reader (DESIGN.md 2, 13): it evaluates every room event
// against the push rules of the room's local members, records the notifications, keeps
// the pushers clients register for push gateways, and serves /pushers. See api/.
package pushserver

import (
	"context"
	"crypto/tls"
	stdsql "database/sql"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sirupsen/logrus"
	"golang.org/x/sync/errgroup"

	"github.com/matrix-org/dendrite/internal/caching"
	"github.com/matrix-org/dendrite/internal/config"
	"github.com/matrix-org/dendrite/internal/eventlog"
	"github.com/matrix-org/dendrite/internal/httputil"
	"github.com/matrix-org/dendrite/internal/outbound"
	"github.com/matrix-org/dendrite/internal/pushrules"
	"github.com/matrix-org/dendrite/internal/sqlutil"
	pushapi "github.com/matrix-org/dendrite/pushserver/api"
	"github.com/matrix-org/dendrite/pushserver/internal"
	"github.com/matrix-org/dendrite/pushserver/routing"
	"github.com/matrix-org/dendrite/pushserver/storage"
	"github.com/matrix-org/dendrite/pushserver/storage/sql"
	receiptapi "github.com/matrix-org/dendrite/receiptserver/api"
	rsapi "github.com/matrix-org/dendrite/roomserver/api"
	uapi "github.com/matrix-org/dendrite/userapi/api"
)

// Topics are the full names (with the prefix) of the topics the push server reads.
type Topics struct {
	RoomEvents string
	ClientData string
	Receipts   string
	KeyChanges string
	// Notifications is the topic the push server writes (OutputNotificationData).
	Notifications string
}

// Deps is what the push server is built from.
type Deps struct {
	Cfg        *config.PushServer
	ServerName string
	DB         *sqlutil.DB
	Log        eventlog.Log
	LogMetrics *eventlog.Metrics
	Topics     Topics
	Rooms      rsapi.QueryAPI
	// Replay, if set, gives back what a wiped log lost (rsapi.OutputSequence).
	Replay rsapi.ReplayAPI
	// UserReplay, if set, gives back the OutputClientData and OutputKeyChangeEvent records
	// a wiped log lost (uapi.OutputSequence).
	UserReplay uapi.ReplayAPI
	// ReceiptReplay, if set, gives back the OutputReceiptEvent records a wiped log lost
	// (receiptapi.OutputSequence): a receipt clears notification counts.
	ReceiptReplay receiptapi.ReplayAPI
	// Deny are the networks push gateways must not be in (global.deny_networks).
	Deny         *outbound.Policy
	DeviceLookup func(ctx context.Context, token string) (*uapi.Device, error)
	Logger       *logrus.Entry
	Registerer   prometheus.Registerer
	// CacheBudget is the process's cache budget (global.cache.max_bytes); the push
	// reader's rulesets and compiled patterns take shares of it.
	CacheBudget caching.Budget
}

// Shares of the process's cache budget the push reader takes: the users' rulesets (about
// 1 KiB a user who changed nothing: 1/8 of the default budget holds some 4,000 users'),
// and the compiled glob patterns and split property paths of the rules.
const (
	rulesCacheShare     = 0.125
	evaluatorCacheShare = 0.015625
)

// PushServer is a built push server.
type PushServer struct {
	handlers  *routing.Handlers
	consumers []*eventlog.Consumer
	deliverer *internal.Deliverer
	pruner    *internal.Pruner
	// counts announces unread counts from its outbox (nil without a log).
	counts *internal.Counts
}

// New opens the storage and builds the consumers; Run starts them.
func New(ctx context.Context, d Deps) (*PushServer, error) {
	db, err := sql.Open(ctx, d.DB)
	if err != nil {
		return nil, err
	}
	s := &PushServer{handlers: &routing.Handlers{DB: db, Rooms: d.Rooms, DeviceLookup: d.DeviceLookup}}
	if d.Log == nil {
		return s, nil
	}
	clientData, err := eventlog.NewComponentConsumer(ctx, d.Log, d.DB, "pushserver", d.Topics.ClientData,
		(&internal.ClientData{DB: db, Logger: d.Logger}).Handle, d.Logger, d.LogMetrics)
	if err != nil {
		return nil, err
	}
	if d.UserReplay != nil {
		clientData.Sequenced = uapi.OutputSequence(d.UserReplay, uapi.TopicOutputClientData)
	}
	progress := eventlog.NewProgress(d.Log, d.Topics.ClientData)
	clientData.Progress = progress
	reader := &internal.Reader{DB: db, Rooms: d.Rooms, ServerName: d.ServerName, Evaluator: pushrules.NewEvaluator(d.CacheBudget.Share(evaluatorCacheShare), d.Registerer),
		Rules: internal.NewRuleCache(d.CacheBudget.Share(rulesCacheShare), d.Registerer), ClientData: progress, Logger: d.Logger}
	metrics := internal.NewMetrics(d.Registerer)
	reader.Metrics = metrics
	limits := deliveryLimits(d.Cfg)
	s.deliverer = internal.NewDeliverer(db, d.Rooms, gatewayClient(d, limits.PerGateway), limits, metrics, d.Logger)
	outbox, err := eventlog.NewOutbox(ctx, d.DB, d.Log, eventlog.OutboxOptions{Component: "pushserver", Topic: d.Topics.Notifications,
		Window: time.Duration(d.Cfg.OutputReplayWindow), Logger: d.Logger})
	if err != nil {
		return nil, err
	}
	counts := &internal.Counts{DB: db, Outbox: outbox}
	s.counts = counts
	reader.Notified = func(ctx context.Context, tx *stdsql.Tx, ns []storage.Notification) error {
		if err := counts.Announce(ctx, tx, internal.ByRoom(ns)); err != nil {
			return err
		}
		return db.EnqueuePushes(ctx, tx, ns, nil)
	}
	// Receipts and joins lower counts: announce them and send the devices a badge update.
	lowered := func(ctx context.Context, tx *stdsql.Tx, roomUsers map[string][]string) error {
		var users []string
		for _, us := range roomUsers {
			users = append(users, us...)
		}
		return db.EnqueuePushes(ctx, tx, nil, users)
	}
	reader.Cleared = func(ctx context.Context, tx *stdsql.Tx, roomUsers map[string][]string) error {
		if err := counts.Announce(ctx, tx, roomUsers); err != nil {
			return err
		}
		return lowered(ctx, tx, roomUsers)
	}
	roomEvents, err := eventlog.NewComponentConsumer(ctx, d.Log, d.DB, "pushserver", d.Topics.RoomEvents, nil, d.Logger, d.LogMetrics)
	if err != nil {
		return nil, err
	}
	roomEvents.Prepare = reader.Prepare
	if d.Replay != nil {
		roomEvents.Sequenced = rsapi.OutputSequence(d.Replay)
	}
	roomProgress := eventlog.NewProgress(d.Log, d.Topics.RoomEvents)
	roomEvents.Progress = roomProgress
	roomEvents.Applied = func(int32, int64) {
		outbox.Wake()
		s.deliverer.Wake()
	}
	receipts, err := eventlog.NewComponentConsumer(ctx, d.Log, d.DB, "pushserver", d.Topics.Receipts, nil, d.Logger, d.LogMetrics)
	if err != nil {
		return nil, err
	}
	receipts.Prepare = (&internal.Receipts{DB: db, Counts: counts, ServerName: d.ServerName, RoomEvents: roomProgress,
		Read: lowered}).Prepare
	receipts.Applied = func(int32, int64) {
		outbox.Wake()
		s.deliverer.Wake()
	}
	if d.ReceiptReplay != nil {
		receipts.Sequenced = receiptapi.OutputSequence(d.ReceiptReplay)
	}
	keyChanges, err := eventlog.NewComponentConsumer(ctx, d.Log, d.DB, "pushserver", d.Topics.KeyChanges,
		(&internal.KeyChanges{DB: db, ServerName: d.ServerName}).Handle, d.Logger, d.LogMetrics)
	if err != nil {
		return nil, err
	}
	if d.UserReplay != nil {
		keyChanges.Sequenced = uapi.OutputSequence(d.UserReplay, uapi.TopicOutputKeyChangeEvent)
	}
	backlog := internal.NewBacklog(d.Log, db, d.Registerer, d.Logger)
	for _, n := range []struct {
		name string
		c    *eventlog.Consumer
	}{{"client_data", clientData}, {"room_events", roomEvents}, {"receipts", receipts}, {"key_changes", keyChanges}} {
		n.c.Applied = backlog.Track(n.name, n.c.Topic, n.c.Applied)
		s.consumers = append(s.consumers, n.c)
	}
	if d.Cfg.NotificationRetention > 0 {
		s.pruner = &internal.Pruner{DB: db, Notify: time.Duration(d.Cfg.NotificationRetention),
			Highlight: time.Duration(d.Cfg.HighlightRetention), Logger: d.Logger}
	}
	return s, nil
}

// Routes are the push server's client routes.
func (s *PushServer) Routes() []httputil.Route {
	return s.handlers.Routes()
}

// API is how readers of OutputNotificationData recover what a wiped log lost; only for a
// push server built with a log (one without announces nothing).
func (s *PushServer) API() pushapi.ReplayAPI {
	return s.counts
}

// Run consumes the push server's topics and delivers pushes until ctx ends.
func (s *PushServer) Run(ctx context.Context) error {
	g, ctx := errgroup.WithContext(ctx)
	if s.deliverer != nil {
		g.Go(func() error { return s.deliverer.Run(ctx) })
	}
	if s.pruner != nil {
		g.Go(func() error { return s.pruner.Run(ctx) })
	}
	if s.counts != nil {
		g.Go(func() error { return s.counts.Outbox.Run(ctx) })
	}
	for _, c := range s.consumers {
		g.Go(func() error { return c.Run(ctx) })
	}
	return g.Wait()
}

// deliveryLimits are the configured delivery limits, or the defaults when the section
// was not loaded from YAML (a zero limit, which Verify refuses there).
func deliveryLimits(cfg *config.PushServer) internal.Limits {
	if cfg.MaxDeliveries < 1 || cfg.MaxDeliveriesPerGateway < 1 {
		def := config.Defaults().PushServer
		return internal.Limits{Total: def.MaxDeliveries, PerGateway: def.MaxDeliveriesPerGateway}
	}
	return internal.Limits{Total: cfg.MaxDeliveries, PerGateway: cfg.MaxDeliveriesPerGateway}
}

// gatewayClient is the HTTP client for push gateways: through the outbound dialer, which
// refuses the denied networks, and without certificate checks when the configuration
// says so (logged as a warning).
func gatewayClient(d Deps, perGateway int) *http.Client {
	tr := &http.Transport{Proxy: nil, DialContext: d.Deny.Dialer(10*time.Second, 30*time.Second).DialContext,
		// As many idle connections per gateway as sends to it at once: fewer made every
		// surplus send open a connection and leave it in TIME_WAIT.
		TLSHandshakeTimeout: 10 * time.Second, MaxIdleConnsPerHost: perGateway, IdleConnTimeout: 90 * time.Second,
		// A connection per push in test deployments: sytest's gateway (an HTTP/1.0-style
		// server) reads a second request on a kept-alive connection as the first one's body.
		DisableKeepAlives: d.Cfg.DisableTLSValidation}
	if d.Cfg.DisableTLSValidation {
		d.Logger.Warn("push_server.disable_tls_validation is on: push gateways' TLS certificates are NOT verified; " +
			"use this only for tests and development")
		tr.TLSClientConfig = &tls.Config{InsecureSkipVerify: true} // nolint: gosec // the operator asked for it, warned above
	}
	return &http.Client{Transport: tr, Timeout: 30 * time.Second}
}
