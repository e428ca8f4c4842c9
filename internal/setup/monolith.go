// Package setup wires components together. It is the only package besides cmd/ that
// imports every component: the monolith calls each component's constructor with direct
// Go implementations of its peers' APIs.
package setup

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/gorilla/mux"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/sirupsen/logrus"
	"golang.org/x/sync/errgroup"

	"github.com/matrix-org/dendrite/clientapi"
	"github.com/matrix-org/dendrite/clientapi/routing"
	"github.com/matrix-org/dendrite/internal/config"
	"github.com/matrix-org/dendrite/internal/eventlog"
	"github.com/matrix-org/dendrite/internal/httputil"
	"github.com/matrix-org/dendrite/internal/sqlutil"
	"github.com/matrix-org/dendrite/roomserver"
	rsapi "github.com/matrix-org/dendrite/roomserver/api"
	"github.com/matrix-org/dendrite/syncapi"
	"github.com/matrix-org/dendrite/userapi"
	uapi "github.com/matrix-org/dendrite/userapi/api"
)

// Monolith is every component in one process over the embedded log.
type Monolith struct {
	cfg      *config.Dendrite
	logger   *logrus.Logger
	registry *prometheus.Registry
	dbs      []*sqlutil.DB
	log      eventlog.Log
	rs       *roomserver.RoomServer
	sync     *syncapi.SyncAPI
	router   *mux.Router
}

// clientRoomserver is the clientapi's view of the roomserver in one process.
type clientRoomserver struct {
	rsapi.QueryAPI
	rsapi.InputAPI
}

// NewMonolith opens every database and builds every component.
func NewMonolith(ctx context.Context, cfg *config.Dendrite, logger *logrus.Logger) (m *Monolith, err error) {
	m = &Monolith{cfg: cfg, logger: logger, registry: prometheus.NewRegistry()}
	defer func() {
		if err != nil {
			m.closeDBs()
		}
	}()
	m.registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	keyID, key, err := config.LoadOrGenerateKey(cfg.SigningKeyPath())
	if err != nil {
		return nil, fmt.Errorf("load signing key: %w", err)
	}
	serverName := spec.ServerName(cfg.Global.ServerName)
	open := func(component string, own config.DatabaseOptions) (*sqlutil.DB, error) {
		db, err := sqlutil.Open(cfg.DatabaseFor(component, own))
		if err != nil {
			return nil, fmt.Errorf("open %s database: %w", component, err)
		}
		m.dbs = append(m.dbs, db)
		return db, nil
	}
	logDB, err := open("eventlog", cfg.Global.Log.EmbeddedDatabase)
	if err != nil {
		return nil, err
	}
	logMetrics := eventlog.NewMetrics(m.registry)
	if m.log, err = eventlog.NewEmbedded(ctx, logDB, eventlog.Config{DefaultPartitions: cfg.Global.Log.Partitions, Metrics: logMetrics}); err != nil {
		return nil, fmt.Errorf("open embedded log: %w", err)
	}
	topic := func(name string) string { return cfg.Global.Log.TopicPrefix + name }

	rsDB, err := open("roomserver", cfg.RoomServer.Database)
	if err != nil {
		return nil, err
	}
	m.rs, err = roomserver.New(ctx, roomserver.Deps{
		Cfg: &cfg.RoomServer, ServerName: serverName, KeyID: keyID, PrivateKey: key, DB: rsDB, Log: m.log,
		InputTopic: topic(rsapi.TopicInputRoomEvent), OutputTopic: topic(rsapi.TopicOutputRoomEvent),
		Logger: logger.WithField("component", "roomserver"), Registerer: m.registry,
	})
	if err != nil {
		return nil, err
	}
	rsClient := clientRoomserver{QueryAPI: m.rs.API(), InputAPI: &rsapi.Input{Log: m.log, Topic: topic(rsapi.TopicInputRoomEvent), Wait: m.rs.API()}}

	uaDB, err := open("userapi", cfg.UserAPI.Database)
	if err != nil {
		return nil, err
	}
	ua, err := userapi.New(ctx, userapi.Deps{
		Cfg: &cfg.UserAPI, ServerName: string(serverName), DB: uaDB, Log: m.log, ClientDataTopic: topic(uapi.TopicOutputClientData),
		Logger: logger.WithField("component", "userapi"), Registerer: m.registry,
	})
	if err != nil {
		return nil, err
	}
	userAPI := ua.API()

	syncDB, err := open("syncapi", cfg.SyncAPI.Database)
	if err != nil {
		return nil, err
	}
	m.sync, err = syncapi.New(ctx, syncapi.Deps{
		Cfg: &cfg.SyncAPI, ServerName: string(serverName), DB: syncDB, Log: m.log,
		OutputRoomEventTopic: topic(rsapi.TopicOutputRoomEvent), ClientDataTopic: topic(uapi.TopicOutputClientData),
		RoomserverAPI: m.rs.API(), DeviceLookup: routing.DeviceLookup(userAPI), FilterLookup: filterLookup(userAPI),
		Logger: logger.WithField("component", "syncapi"), Registerer: m.registry,
	})
	if err != nil {
		return nil, err
	}
	client := clientapi.New(clientapi.Deps{Cfg: &cfg.ClientAPI, ServerName: serverName, KeyID: keyID, PrivateKey: key, RSAPI: rsClient, UserAPI: userAPI})
	m.router = m.buildRouter(client.Routes(), m.sync.Routes())
	return m, nil
}

// filterLookup lets syncapi resolve stored filter IDs through the userapi.
func filterLookup(u uapi.ClientUserAPI) func(ctx context.Context, localpart, filterID string) ([]byte, error) {
	return func(ctx context.Context, localpart, filterID string) ([]byte, error) {
		res, err := u.QueryFilter(ctx, &uapi.QueryFilterRequest{Localpart: localpart, FilterID: filterID})
		if err != nil {
			return nil, err
		}
		return res.Filter, nil
	}
}

func (m *Monolith) buildRouter(routeSets ...[]httputil.Route) *mux.Router {
	router := mux.NewRouter().UseEncodedPath()
	var limiter *httputil.RateLimiter
	rl := m.cfg.ClientAPI.RateLimiting
	if rl.Enabled {
		limiter = httputil.NewRateLimiter(rl.PerSecond, rl.Burst, rl.ExemptUserIDs)
	}
	srv := &httputil.Server{
		Component: "monolith", Logger: m.logger.WithField("component", "http"),
		Metrics: httputil.NewMetrics(m.registry), MaxBodyBytes: m.cfg.ClientAPI.MaxBodyBytes, RateLimiter: limiter,
	}
	for _, routes := range routeSets {
		srv.Register(router, routes)
	}
	httputil.Health(router, m.ready)
	router.Handle("/metrics", httputil.MetricsHandler(m.registry))
	return router
}

// ready reports whether the databases answer.
func (m *Monolith) ready(ctx context.Context) error {
	for _, db := range m.dbs {
		if err := db.PingContext(ctx); err != nil {
			return err
		}
	}
	return nil
}

// Handler is the monolith's HTTP handler (client API, health, metrics).
func (m *Monolith) Handler() http.Handler {
	return m.router
}

// Run serves on the listener and runs every component until ctx ends, then shuts down in
// order: listener, consumers, log, databases.
func (m *Monolith) Run(ctx context.Context, l net.Listener) error {
	defer m.closeDBs()
	srv := &http.Server{Handler: m.router, ReadHeaderTimeout: 10 * time.Second}
	g, gctx := errgroup.WithContext(ctx)
	compCtx, stopComponents := context.WithCancel(context.Background())
	defer stopComponents()
	g.Go(func() error { return m.rs.Run(compCtx) })
	g.Go(func() error { return m.sync.Run(compCtx) })
	g.Go(func() error {
		err := srv.Serve(l)
		if errors.Is(err, http.ErrServerClosed) {
			return nil
		}
		return err
	})
	g.Go(func() error {
		<-gctx.Done()
		shutdownCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		err := srv.Shutdown(shutdownCtx)
		stopComponents()
		return err
	})
	err := g.Wait()
	if cerr := m.log.Close(); cerr != nil && err == nil {
		err = cerr
	}
	return err
}

func (m *Monolith) closeDBs() {
	for _, db := range m.dbs {
		if err := db.Close(); err != nil {
			m.logger.WithError(err).Warn("closing database failed")
		}
	}
}
