// Package pushserver is the push reader (DESIGN.md 2, 13): it evaluates every room event
// against the push rules of the room's local members, records the notifications, keeps
// the pushers clients register for push gateways, and serves /pushers. See api/.
package pushserver

import (
	"context"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sirupsen/logrus"
	"golang.org/x/sync/errgroup"

	"github.com/matrix-org/dendrite/internal/config"
	"github.com/matrix-org/dendrite/internal/eventlog"
	"github.com/matrix-org/dendrite/internal/httputil"
	"github.com/matrix-org/dendrite/internal/pushrules"
	"github.com/matrix-org/dendrite/internal/sqlutil"
	"github.com/matrix-org/dendrite/pushserver/internal"
	"github.com/matrix-org/dendrite/pushserver/routing"
	"github.com/matrix-org/dendrite/pushserver/storage/sql"
	rsapi "github.com/matrix-org/dendrite/roomserver/api"
	uapi "github.com/matrix-org/dendrite/userapi/api"
)

// Topics are the full names (with the prefix) of the topics the push server reads.
type Topics struct {
	RoomEvents string
	ClientData string
}

// Deps is what the push server is built from.
type Deps struct {
	Cfg          *config.PushServer
	ServerName   string
	DB           *sqlutil.DB
	Log          eventlog.Log
	LogMetrics   *eventlog.Metrics
	Topics       Topics
	Rooms        rsapi.QueryAPI
	DeviceLookup func(ctx context.Context, token string) (*uapi.Device, error)
	Logger       *logrus.Entry
	Registerer   prometheus.Registerer
}

// PushServer is a built push server.
type PushServer struct {
	handlers  *routing.Handlers
	consumers []*eventlog.Consumer
}

// New opens the storage and builds the consumers; Run starts them.
func New(ctx context.Context, d Deps) (*PushServer, error) {
	db, err := sql.Open(ctx, d.DB)
	if err != nil {
		return nil, err
	}
	s := &PushServer{handlers: &routing.Handlers{DB: db, DeviceLookup: d.DeviceLookup}}
	if d.Log == nil {
		return s, nil
	}
	clientData, err := eventlog.NewComponentConsumer(ctx, d.Log, d.DB, "pushserver", d.Topics.ClientData,
		(&internal.ClientData{DB: db, Logger: d.Logger}).Handle, d.Logger, d.LogMetrics)
	if err != nil {
		return nil, err
	}
	progress := internal.NewProgress(d.Log, d.Topics.ClientData)
	clientData.Applied = progress.Applied
	reader := &internal.Reader{DB: db, Rooms: d.Rooms, ServerName: d.ServerName, Evaluator: pushrules.NewEvaluator(),
		Rules: internal.NewRuleCache(), ClientData: progress, Metrics: internal.NewMetrics(d.Registerer), Logger: d.Logger}
	roomEvents, err := eventlog.NewComponentConsumer(ctx, d.Log, d.DB, "pushserver", d.Topics.RoomEvents, nil, d.Logger, d.LogMetrics)
	if err != nil {
		return nil, err
	}
	roomEvents.Prepare = reader.Prepare
	s.consumers = []*eventlog.Consumer{clientData, roomEvents}
	return s, nil
}

// Routes are the push server's client routes.
func (s *PushServer) Routes() []httputil.Route {
	return s.handlers.Routes()
}

// Run consumes the push server's topics until ctx ends.
func (s *PushServer) Run(ctx context.Context) error {
	g, ctx := errgroup.WithContext(ctx)
	for _, c := range s.consumers {
		g.Go(func() error { return c.Run(ctx) })
	}
	return g.Wait()
}
