// Package syncapi is the reader component that serves clients their rooms: it consumes
// OutputRoomEvent and OutputClientData into its own storage, where every change gets a stream
// position from one database sequence, and answers /sync (with long-polling), /messages and
// /context from there.
package syncapi

import (
	"context"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sirupsen/logrus"
	"golang.org/x/sync/errgroup"

	"github.com/matrix-org/dendrite/internal/config"
	"github.com/matrix-org/dendrite/internal/eventlog"
	"github.com/matrix-org/dendrite/internal/httputil"
	"github.com/matrix-org/dendrite/internal/sqlutil"
	rsapi "github.com/matrix-org/dendrite/roomserver/api"
	"github.com/matrix-org/dendrite/syncapi/consumer"
	"github.com/matrix-org/dendrite/syncapi/internal"
	"github.com/matrix-org/dendrite/syncapi/notifier"
	"github.com/matrix-org/dendrite/syncapi/routing"
	"github.com/matrix-org/dendrite/syncapi/storage/sql"
	uapi "github.com/matrix-org/dendrite/userapi/api"
)

// Deps is what the sync API is built from.
type Deps struct {
	Cfg                  *config.SyncAPI
	ServerName           string
	DB                   *sqlutil.DB
	Log                  eventlog.Log
	OutputRoomEventTopic string
	ClientDataTopic      string
	RoomserverAPI        rsapi.SyncRoomserverAPI
	DeviceLookup         func(ctx context.Context, token string) (*uapi.Device, error)
	FilterLookup         func(ctx context.Context, localpart, filterID string) ([]byte, error)
	Logger               *logrus.Entry
	// Registerer may be nil.
	Registerer prometheus.Registerer
}

// SyncAPI is a running sync API.
type SyncAPI struct {
	roomEvents *consumer.RoomEvents
	clientData *consumer.ClientData
	handlers   *routing.Handlers
}

// New opens the storage and loads room memberships into the notifier. Run starts consuming.
func New(ctx context.Context, d Deps) (*SyncAPI, error) {
	offsets, err := eventlog.NewOffsetStore(ctx, d.DB, "syncapi")
	if err != nil {
		return nil, fmt.Errorf("open syncapi offsets: %w", err)
	}
	db, err := sql.Open(ctx, d.DB, offsets)
	if err != nil {
		return nil, err
	}
	waiting := prometheus.NewGauge(prometheus.GaugeOpts{Name: "dendrite_syncapi_waiting_requests", Help: "Long-polling /sync requests currently waiting."})
	if d.Registerer != nil {
		d.Registerer.MustRegister(waiting)
	}
	n := notifier.New(d.ServerName, waiting)
	if err = n.Load(ctx, db); err != nil {
		return nil, fmt.Errorf("load room members: %w", err)
	}
	logger := d.Logger
	if logger == nil {
		logger = logrus.NewEntry(logrus.New())
	}
	progress := consumer.NewProgress(d.Log, d.OutputRoomEventTopic, d.ClientDataTopic)
	shared := consumer.Shared{Log: d.Log, DB: db, Notifier: n, Progress: progress, Logger: logger, Metrics: consumer.NewMetrics(d.Registerer)}
	return &SyncAPI{
		roomEvents: consumer.NewRoomEvents(shared, d.OutputRoomEventTopic, d.RoomserverAPI),
		clientData: consumer.NewClientData(shared, d.ClientDataTopic),
		handlers: &routing.Handlers{Syncer: internal.NewSyncer(db, n), DeviceLookup: d.DeviceLookup, FilterLookup: d.FilterLookup,
			CatchUp: progress.CatchUp},
	}, nil
}

// Routes are the client-server endpoints, with absolute paths under /_matrix/client/v3 and
// /_matrix/client/r0.
func (s *SyncAPI) Routes() []httputil.Route {
	return s.handlers.Routes()
}

// Run consumes both topics until ctx ends.
func (s *SyncAPI) Run(ctx context.Context) error {
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return s.roomEvents.Run(ctx) })
	g.Go(func() error { return s.clientData.Run(ctx) })
	return g.Wait()
}
