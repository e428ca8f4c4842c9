// Package syncapi is the reader component that serves clients their rooms: it consumes
// OutputRoomEvent, OutputClientData, OutputKeyChangeEvent and the EDU outputs into its own
// storage, where every change gets a stream position from one database sequence, and answers
// /sync (with long-polling), simplified sliding sync (MSC4186), /messages, /context and
// /keys/changes from there.
package syncapi

import (
	"context"
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sirupsen/logrus"
	"golang.org/x/sync/errgroup"

	eduapi "github.com/matrix-org/dendrite/eduserver/api"
	fapi "github.com/matrix-org/dendrite/federationapi/api"
	"github.com/matrix-org/dendrite/internal/caching"
	"github.com/matrix-org/dendrite/internal/config"
	"github.com/matrix-org/dendrite/internal/eventlog"
	"github.com/matrix-org/dendrite/internal/httputil"
	"github.com/matrix-org/dendrite/internal/sqlutil"
	presenceapi "github.com/matrix-org/dendrite/presenceserver/api"
	pushapi "github.com/matrix-org/dendrite/pushserver/api"
	receiptapi "github.com/matrix-org/dendrite/receiptserver/api"
	rsapi "github.com/matrix-org/dendrite/roomserver/api"
	"github.com/matrix-org/dendrite/syncapi/api"
	"github.com/matrix-org/dendrite/syncapi/consumer"
	"github.com/matrix-org/dendrite/syncapi/internal"
	"github.com/matrix-org/dendrite/syncapi/notifier"
	"github.com/matrix-org/dendrite/syncapi/routing"
	"github.com/matrix-org/dendrite/syncapi/storage"
	"github.com/matrix-org/dendrite/syncapi/storage/sql"
	uapi "github.com/matrix-org/dendrite/userapi/api"
)

// Deps is what the sync API is built from.
type Deps struct {
	Cfg        *config.SyncAPI
	ServerName string
	DB         *sqlutil.DB
	Log        eventlog.Log
	// LogMetrics, if set, records the consumers' recoveries from a wiped log.
	LogMetrics           *eventlog.Metrics
	OutputRoomEventTopic string
	ClientDataTopic      string
	// KeyChangeTopic is OutputKeyChangeEvent's name ("" consumes no key changes).
	KeyChangeTopic  string
	EphemeralTopics consumer.EphemeralTopics
	// Presence, when set, is told of syncing users; nil when presence is off.
	Presence      presenceapi.InputAPI
	RoomserverAPI rsapi.SyncRoomserverAPI
	// Backfill, when set, fetches history older than what this server has for /messages
	// (the federationapi); BackfillLimit is the events asked for at once (100 when 0).
	Backfill      fapi.SyncFederationAPI
	BackfillLimit int
	// Keys, when set, gives /sync the device's one-time key counts (the userapi), and is
	// told of other servers' users this server no longer shares a room with.
	Keys uapi.SyncKeyAPI
	// Erasure, when set, tells which local accounts were erased, whose events are then
	// served redacted to users who were not joined when they were sent (the userapi).
	Erasure uapi.ErasureAPI
	// UserReplay, when set, gives back the OutputClientData and OutputKeyChangeEvent records
	// a wiped log lost (the userapi's outbox; uapi.OutputSequence).
	UserReplay uapi.ReplayAPI
	// EDUReplay, when set, gives back the OutputSendToDeviceEvent records a wiped log lost
	// (the eduserver's outbox; eduapi.OutputSequence).
	EDUReplay eduapi.ReplayAPI
	// ReceiptReplay, when set, gives back the OutputReceiptEvent records a wiped log lost
	// (the receiptserver's outbox; receiptapi.OutputSequence).
	ReceiptReplay receiptapi.ReplayAPI
	// PushReplay, when set, gives back the OutputNotificationData records a wiped log lost
	// (the pushserver's outbox; pushapi.OutputSequence).
	PushReplay pushapi.ReplayAPI
	// PresenceReplay, when set, gives back the OutputPresenceEvent records a wiped log lost
	// (the presenceserver's outbox; presenceapi.OutputSequence).
	PresenceReplay presenceapi.ReplayAPI
	DeviceLookup   func(ctx context.Context, token string) (*uapi.Device, error)
	FilterLookup   func(ctx context.Context, localpart, filterID string) ([]byte, error)
	Logger         *logrus.Entry
	// Registerer may be nil.
	Registerer prometheus.Registerer
	// CacheBudget is the process's cache budget (global.cache.max_bytes).
	CacheBudget caching.Budget
}

// membershipCacheShare is the share of the process's cache budget the users' membership
// histories take.
const membershipCacheShare = 0.125

// lazyMembersCacheShare is the share of the process's cache budget the record of the
// members each device was sent by lazy-loading syncs takes.
const lazyMembersCacheShare = 0.03125

// SyncAPI is a running sync API.
type SyncAPI struct {
	roomEvents *consumer.RoomEvents
	clientData *consumer.ClientData
	keyChanges *consumer.KeyChanges
	ephemeral  *consumer.Ephemeral
	handlers   *routing.Handlers
	db         storage.Database
	logger     *logrus.Entry
}

// New opens the storage, loads room memberships into the notifier and every room's activity
// into memory. Run starts consuming.
func New(ctx context.Context, d Deps) (*SyncAPI, error) {
	offsets, err := eventlog.NewOffsetStore(ctx, d.DB, "syncapi")
	if err != nil {
		return nil, fmt.Errorf("open syncapi offsets: %w", err)
	}
	sqlDB, err := sql.Open(ctx, d.DB, offsets)
	if err != nil {
		return nil, err
	}
	db := storage.WithMembershipCache(sqlDB, d.CacheBudget.Share(membershipCacheShare), d.Registerer)
	waiting := prometheus.NewGauge(prometheus.GaugeOpts{Name: "dendrite_syncapi_waiting_requests", Help: "Long-polling /sync requests currently waiting."})
	if d.Registerer != nil {
		d.Registerer.MustRegister(waiting)
	}
	n := notifier.New(d.ServerName, waiting)
	if err = n.Load(ctx, db); err != nil {
		return nil, fmt.Errorf("load room members: %w", err)
	}
	activity, err := storage.NewActivityIndex(ctx, db)
	if err != nil {
		return nil, fmt.Errorf("load room activity: %w", err)
	}
	logger := d.Logger
	if logger == nil {
		logger = logrus.NewEntry(logrus.New())
	}
	topics := []string{d.OutputRoomEventTopic, d.ClientDataTopic}
	if d.KeyChangeTopic != "" {
		topics = append(topics, d.KeyChangeTopic)
	}
	progress := eventlog.NewProgress(d.Log, topics...)
	shared := consumer.Shared{Log: d.Log, SQL: d.DB, Offsets: offsets, DB: db, Notifier: n, Progress: progress, Logger: logger,
		LogMetrics: d.LogMetrics}
	var bf *internal.Backfill
	if d.Backfill != nil {
		bf = &internal.Backfill{API: d.Backfill, ServerName: d.ServerName, Limit: d.BackfillLimit, Logger: logger}
	}
	var er *internal.Erasure
	if d.Erasure != nil {
		er = &internal.Erasure{API: d.Erasure, ServerName: d.ServerName}
	}
	lazy := internal.NewLazyMembers(d.CacheBudget.Share(lazyMembersCacheShare), d.Registerer)
	handlers := &routing.Handlers{Syncer: internal.NewSyncer(db, n, activity, bf, d.Keys, er, lazy), DeviceLookup: d.DeviceLookup, FilterLookup: d.FilterLookup,
		CatchUp: progress.CatchUp, ResolveAlias: resolveAlias(d.RoomserverAPI)}
	if d.Presence != nil {
		handlers.Presence = &internal.SyncPresence{Input: d.Presence}
	}
	var keyChanges *consumer.KeyChanges
	if d.KeyChangeTopic != "" {
		keyChanges = consumer.NewKeyChanges(shared, d.KeyChangeTopic, d.UserReplay)
	}
	return &SyncAPI{
		keyChanges: keyChanges,
		roomEvents: consumer.NewRoomEvents(shared, d.OutputRoomEventTopic, d.RoomserverAPI, d.Keys, d.ServerName),
		clientData: consumer.NewClientData(shared, d.ClientDataTopic, d.UserReplay),
		ephemeral: consumer.NewEphemeral(shared, d.EphemeralTopics, d.ServerName,
			consumer.EphemeralReplays{ToDevice: d.EDUReplay, Receipts: d.ReceiptReplay, NotificationCounts: d.PushReplay, Presence: d.PresenceReplay}),
		handlers: handlers, db: db, logger: logger,
	}, nil
}

// Routes are the client-server endpoints, with absolute paths under /_matrix/client/v3 and
// /_matrix/client/r0.
func (s *SyncAPI) Routes() []httputil.Route {
	return s.handlers.Routes()
}

// API is the sync API's internal API: the clientapi ends a device's peek through it when
// the user leaves a room they were only peeking into.
func (s *SyncAPI) API() api.PeekAPI {
	return peeks{syncer: s.handlers.Syncer}
}

// peeks implements api.PeekAPI over the Syncer that /peek and /unpeek use.
type peeks struct {
	syncer *internal.Syncer
}

// PerformUnpeek implements api.PeekAPI.
func (p peeks) PerformUnpeek(ctx context.Context, req *api.PerformUnpeekRequest) (*api.PerformUnpeekResponse, error) {
	ended, err := p.syncer.Unpeek(ctx, req.UserID, req.DeviceID, req.RoomID)
	if err != nil {
		return nil, err
	}
	return &api.PerformUnpeekResponse{Ended: ended}, nil
}

// Run consumes every topic, and forgets delivered send-to-device messages after a day,
// until ctx ends.
func (s *SyncAPI) Run(ctx context.Context) error {
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return s.roomEvents.Run(ctx) })
	g.Go(func() error { return s.clientData.Run(ctx) })
	if s.keyChanges != nil {
		g.Go(func() error { return s.keyChanges.Run(ctx) })
	}
	g.Go(func() error { return s.ephemeral.Run(ctx) })
	g.Go(func() error {
		tick := time.NewTicker(time.Hour)
		defer tick.Stop()
		for {
			if err := s.db.PruneToDevice(ctx, time.Now().Add(-ToDeviceRetention).UnixMilli()); err != nil && ctx.Err() == nil {
				s.logger.WithError(err).Warn("pruning delivered to-device messages failed")
			}
			select {
			case <-ctx.Done():
				return nil
			case <-tick.C:
			}
		}
	})
	return g.Wait()
}

// resolveAlias looks a local alias up in the roomserver's directory.
func resolveAlias(rs rsapi.SyncRoomserverAPI) func(ctx context.Context, alias string) (string, error) {
	return func(ctx context.Context, alias string) (string, error) {
		res, err := rs.QueryRoomAlias(ctx, &rsapi.QueryRoomAliasRequest{Alias: alias})
		if err != nil {
			return "", err
		}
		return res.RoomID, nil
	}
}

// ToDeviceRetention is how long the IDs of delivered to-device messages are kept, so that a
// late redelivery is recognised.
const ToDeviceRetention = 24 * time.Hour
