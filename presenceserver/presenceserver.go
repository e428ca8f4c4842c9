// Package presenceserver is the server for presence. It reads InputPresence, which writers
// produce (explicit presence from clientapi, syncing from syncapi), applies idle and offline
// timeouts, and writes every change to OutputPresenceEvent, which the sync API (and the
// federation sender) read. Its query API answers GET /presence. See api/.
package presenceserver

import (
	"context"
	"time"

	"github.com/sirupsen/logrus"
	"golang.org/x/sync/errgroup"

	"github.com/matrix-org/dendrite/internal/config"
	"github.com/matrix-org/dendrite/internal/eventlog"
	"github.com/matrix-org/dendrite/internal/sqlutil"
	"github.com/matrix-org/dendrite/presenceserver/api"
	"github.com/matrix-org/dendrite/presenceserver/internal"
	"github.com/matrix-org/dendrite/presenceserver/storage/sql"
)

// Deps is what the presenceserver is built from. Topics are full names, with the prefix.
type Deps struct {
	Cfg         *config.PresenceServer
	DB          *sqlutil.DB
	Log         eventlog.Log
	LogMetrics  *eventlog.Metrics
	InputTopic  string
	OutputTopic string
	Logger      *logrus.Entry
}

// PresenceServer is a running presenceserver.
type PresenceServer struct {
	presence *internal.Presence
	intake   *eventlog.Intake
	sweep    time.Duration
}

// New opens the storage. Run starts consuming.
func New(ctx context.Context, d Deps) (*PresenceServer, error) {
	db, err := sql.Open(ctx, d.DB)
	if err != nil {
		return nil, err
	}
	outbox, err := eventlog.NewOutbox(ctx, d.DB, d.Log, eventlog.OutboxOptions{Component: "presenceserver", Topic: d.OutputTopic,
		Window: time.Duration(d.Cfg.OutputReplayWindow), Logger: d.Logger})
	if err != nil {
		return nil, err
	}
	taken, err := eventlog.NewTaken(ctx, d.DB, eventlog.TakenOptions{Component: "presenceserver",
		Keep: 2 * time.Duration(d.Cfg.InputWaitTimeout), Logger: d.Logger})
	if err != nil {
		return nil, err
	}
	p := &internal.Presence{DB: db, Log: d.Log, InputTopic: d.InputTopic, Outbox: outbox, Taken: taken,
		IdleTimeout: time.Duration(d.Cfg.IdleTimeout), OfflineTimeout: time.Duration(d.Cfg.OfflineTimeout), Logger: d.Logger}
	intake, err := taken.Intake(ctx, d.Log, d.InputTopic, outbox, p.Handle, d.LogMetrics)
	if err != nil {
		return nil, err
	}
	return &PresenceServer{presence: p, intake: intake, sweep: min(max(time.Duration(d.Cfg.IdleTimeout)/10, time.Second), 10*time.Second)}, nil
}

// API is the presenceserver's query API, the replay of OutputPresenceEvent and how writers
// learn that a presence input was taken.
func (s *PresenceServer) API() api.ServerAPI {
	return s.presence
}

// Run consumes the input topic, produces the stored changes, sweeps for timeouts and
// forgets expired taken inputs until ctx ends.
func (s *PresenceServer) Run(ctx context.Context) error {
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return s.intake.Run(ctx) })
	g.Go(func() error { return s.presence.Sweep(ctx, s.sweep) })
	return g.Wait()
}
