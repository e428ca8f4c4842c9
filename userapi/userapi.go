// Package userapi is the component that owns local accounts: passwords, devices and
// access tokens, profiles, account data (announced on OutputClientData), filters, and
// end-to-end encryption keys (changes announced on OutputKeyChangeEvent). See api/ for its
// contract.
package userapi

import (
	"context"
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sirupsen/logrus"
	"golang.org/x/sync/errgroup"

	"github.com/matrix-org/dendrite/internal/config"
	"github.com/matrix-org/dendrite/internal/eventlog"
	"github.com/matrix-org/dendrite/internal/sqlutil"
	"github.com/matrix-org/dendrite/userapi/api"
	"github.com/matrix-org/dendrite/userapi/consumer"
	"github.com/matrix-org/dendrite/userapi/internal"
	"github.com/matrix-org/dendrite/userapi/storage/sql"
)

// Deps is what the userapi is built from. Log and Registerer may be nil: without a Log
// account data changes are stored but not announced (the create-account command).
type Deps struct {
	Cfg             *config.UserAPI
	ServerName      string
	DB              *sqlutil.DB
	Log             eventlog.Log
	ClientDataTopic string
	// KeyChangeTopic is OutputKeyChangeEvent's name; DeviceListTopic InputDeviceListUpdate's
	// ("" consumes nothing, as the create-account command does).
	KeyChangeTopic  string
	DeviceListTopic string
	LogMetrics      *eventlog.Metrics
	// AppServices are the application services: their as_tokens authenticate, their
	// senders' accounts are created at start-up. Nil: none.
	AppServices *config.AppServiceAPI
	// Remote fetches other servers' users' device lists (GET /user/devices) for the cache of
	// them; nil fetches none.
	Remote     api.RemoteDeviceFetcher
	Logger     *logrus.Entry
	Registerer prometheus.Registerer
}

// UserAPI is the userapi component.
type UserAPI struct {
	api        *internal.UserAPI
	deviceList *eventlog.Consumer
}

// New migrates the userapi's storage and builds its API.
func New(ctx context.Context, d Deps) (*UserAPI, error) {
	db, err := sql.Open(ctx, d.DB)
	if err != nil {
		return nil, err
	}
	logger := d.Logger
	if logger == nil {
		logger = logrus.NewEntry(logrus.StandardLogger())
	}
	impl, err := internal.New(internal.UserAPI{
		DB: db, ServerName: d.ServerName, BCryptCost: d.Cfg.BCryptCost,
		Log: d.Log, ClientDataTopic: d.ClientDataTopic, KeyChangeTopic: d.KeyChangeTopic, OutputWindow: outputWindow(d.Cfg), Logger: logger, Metrics: internal.NewMetrics(d.Registerer),
		AppServices: d.AppServices, Remote: d.Remote,
	})
	if err != nil {
		return nil, fmt.Errorf("start userapi: %w", err)
	}
	if err := impl.EnsureAppServiceSenders(ctx); err != nil {
		return nil, err
	}
	u := &UserAPI{api: impl}
	if d.DeviceListTopic != "" && d.Log != nil {
		h := &consumer.DeviceLists{DB: db, Announcement: impl.RemoteChange, Announce: impl.Announce, Stale: impl.MarkStale}
		if u.deviceList, err = eventlog.NewComponentConsumer(ctx, d.Log, d.DB, "userapi", d.DeviceListTopic, nil, logger, d.LogMetrics); err != nil {
			return nil, err
		}
		u.deviceList.Prepare = h.Prepare
	}
	return u, nil
}

// outputWindow is user_api.output_replay_window, 7 days when unset.
func outputWindow(cfg *config.UserAPI) time.Duration {
	if cfg.OutputReplayWindow == 0 {
		return 7 * 24 * time.Hour
	}
	return time.Duration(cfg.OutputReplayWindow)
}

// Run consumes other servers' device list updates, fetches the device lists they mark
// stale, and produces what its outbox holds unproduced, until ctx ends.
func (u *UserAPI) Run(ctx context.Context) error {
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return u.api.RunResyncs(ctx) })
	g.Go(func() error { return u.api.RunOutbox(ctx) })
	if u.deviceList != nil {
		g.Go(func() error { return u.deviceList.Run(ctx) })
	}
	return g.Wait()
}

// API is the userapi's client-facing API.
func (u *UserAPI) API() api.ClientUserAPI {
	return u.api
}
