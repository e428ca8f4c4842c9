// Package setup wires components together. It is the only package besides cmd/ that
// imports every component. One wiring table (components.go) drives both deployments: the
// monolith builds every component in one process over the embedded log with direct Go
// implementations of its peers' APIs; a polylith process (RunComponent) builds one component
// over Kafka with inthttp clients as its peers.
package setup

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/gorilla/mux"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/sirupsen/logrus"
	"golang.org/x/sync/errgroup"

	"github.com/matrix-org/dendrite/internal/config"
	"github.com/matrix-org/dendrite/internal/eventlog"
	"github.com/matrix-org/dendrite/internal/httputil"
	"github.com/matrix-org/dendrite/internal/privfs"
	"github.com/matrix-org/dendrite/internal/sqlutil"
)

// Monolith is every component in one process, over the embedded log or, when configured,
// Kafka.
type Monolith struct {
	env    *env
	runs   []func(context.Context) error
	router *mux.Router
	// metrics serves /metrics and the profiler on metricsL (global.metrics.listen); nil
	// when not configured.
	metrics  *http.Server
	metricsL net.Listener
}

// openMonolithLog opens the log global.log.kind names: the embedded one in its own database,
// or Kafka (waiting for the brokers until ctx ends).
func openMonolithLog(ctx context.Context, e *env, logger *logrus.Logger) (eventlog.Log, error) {
	metrics := eventlog.NewMetrics(e.registry)
	e.logMetrics = metrics
	if e.cfg.Global.Log.Kind == "kafka" {
		k, err := eventlog.NewKafka(ctx, e.kafkaConfig("dendrite-monolith", metrics, logger.WithField("component", "eventlog")))
		if err != nil {
			return nil, fmt.Errorf("connect to kafka: %w", err)
		}
		return k, nil
	}
	logDB, err := e.open("eventlog", e.cfg.Global.Log.EmbeddedDatabase)
	if err != nil {
		return nil, err
	}
	l, err := eventlog.NewEmbedded(ctx, logDB, eventlog.Config{DefaultPartitions: e.cfg.Global.Log.Partitions,
		Retention: time.Duration(e.cfg.Global.Log.ConsumedRetention), Metrics: metrics, Logger: logger.WithField("component", "eventlog")})
	if err != nil {
		return nil, fmt.Errorf("open embedded log: %w", err)
	}
	return l, nil
}

// NewMonolith opens every database and builds every component. It refuses a data directory
// that other users may write to, and creates a missing one 0700 (privfs.MkdirAll).
func NewMonolith(ctx context.Context, cfg *config.Dendrite, logger *logrus.Logger) (m *Monolith, err error) {
	if err = privfs.MkdirAll(cfg.Global.DataDir); err != nil {
		return nil, fmt.Errorf("global.data_dir: %w", err)
	}
	e, err := newEnv(cfg, logger)
	if err != nil {
		return nil, err
	}
	// The metrics listener first: an address in use stops the start before anything opens.
	metrics, metricsL, err := metricsServer(e)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			e.closeDBs()
			if metricsL != nil {
				_ = metricsL.Close() // the start failed already; that error is the one to report
			}
		}
	}()
	warnConfig(cfg, logrus.NewEntry(logger), true)
	if err = applyMemoryLimits(cfg, logrus.NewEntry(logger)); err != nil {
		return nil, err
	}
	m = &Monolith{env: e, metrics: metrics, metricsL: metricsL}
	e.registry.MustRegister(processCollectors()...)
	if e.log, err = openMonolithLog(ctx, e, logger); err != nil {
		return nil, err
	}
	var routes, fedRoutes, mediaRoutes []httputil.Route
	for _, c := range components {
		b, err := c.build(ctx, e)
		if err != nil {
			return nil, fmt.Errorf("build %s: %w", c.name, err)
		}
		routes = append(routes, b.routes...)
		fedRoutes = append(fedRoutes, b.fedRoutes...)
		mediaRoutes = append(mediaRoutes, b.mediaRoutes...)
		if b.run != nil {
			m.runs = append(m.runs, b.run)
		}
		if b.roomserver != nil {
			e.roomserver = b.roomserver
		}
		if b.users != nil {
			e.users = b.users
		}
		if b.presence != nil {
			e.presence = b.presence
		}
		if b.edu != nil {
			e.edu = b.edu
		}
		if b.receipts != nil {
			e.receipts = b.receipts
		}
		if b.push != nil {
			e.push = b.push
		}
		if b.keys != nil {
			e.keys = b.keys
		}
		if b.sender != nil {
			e.sender = b.sender
		}
		if b.appServices != nil {
			e.appServices = b.appServices
		}
		if b.peeks != nil {
			e.peeks = b.peeks
		}
	}
	m.router = publicRouter(e, "monolith", routes, fedRoutes, mediaRoutes, e.ready)
	return m, nil
}

func processCollectors() []prometheus.Collector {
	return []prometheus.Collector{collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		sqlutil.SQLiteMemoryCollector()}
}

// Handler is the monolith's public HTTP handler (client, federation and key APIs, health).
func (m *Monolith) Handler() http.Handler {
	return m.router
}

// metricsServer is the monolith's operator listener (global.metrics.listen) serving
// /metrics and /debug/pprof/, or nil when metrics are off or have no listener.
func metricsServer(e *env) (*http.Server, net.Listener, error) {
	mc := e.cfg.Global.Metrics
	if !mc.Enabled || mc.Listen == "" {
		if mc.Enabled {
			e.logger.Info("metrics are not served: set global.metrics.listen to an internal address to serve /metrics")
		}
		return nil, nil, nil
	}
	l, err := net.Listen("tcp", mc.Listen)
	if err != nil {
		return nil, nil, fmt.Errorf("metrics listener (global.metrics.listen): %w", err)
	}
	router := mux.NewRouter()
	operatorRoutes(router, true, e.registry)
	e.logger.WithField("address", l.Addr().String()).Info("dendrite monolith serving /metrics and /debug/pprof/")
	return &http.Server{Handler: router, ReadHeaderTimeout: 10 * time.Second}, l, nil
}

// TLSListener is a listener the monolith serves over TLS with a certificate and key (PEM
// files): the federation listener (--https-bind-address).
type TLSListener struct {
	Listener          net.Listener
	CertFile, KeyFile string
}

// Run serves on the listener (plain HTTP) and the TLS listeners, all with the same routes
// (client, federation and key APIs), and /metrics on its own listener when configured
// (global.metrics), and runs every component until ctx ends; then it shuts down in order:
// listeners, consumers, log, databases.
func (m *Monolith) Run(ctx context.Context, l net.Listener, tlsListeners ...TLSListener) error {
	defer m.env.closeDBs()
	if m.env.fedClient != nil {
		defer m.env.fedClient.CloseIdleConnections()
	}
	servers := []*http.Server{{Handler: m.router, ReadHeaderTimeout: 10 * time.Second}}
	serve := []func() error{func() error { return servers[0].Serve(l) }}
	if m.metrics != nil {
		servers = append(servers, m.metrics)
		serve = append(serve, func() error { return m.metrics.Serve(m.metricsL) })
	}
	for _, tl := range tlsListeners {
		srv := &http.Server{Handler: m.router, ReadHeaderTimeout: 10 * time.Second}
		servers = append(servers, srv)
		serve = append(serve, func() error { return srv.ServeTLS(tl.Listener, tl.CertFile, tl.KeyFile) })
	}
	g, gctx := errgroup.WithContext(ctx)
	compCtx, stopComponents := context.WithCancel(context.Background())
	defer stopComponents()
	for _, run := range m.runs {
		g.Go(func() error { return run(compCtx) })
	}
	for _, s := range serve {
		g.Go(func() error {
			if err := s(); !errors.Is(err, http.ErrServerClosed) {
				return err
			}
			return nil
		})
	}
	g.Go(func() error {
		<-gctx.Done()
		shutdownCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		var errs []error
		for _, srv := range servers {
			errs = append(errs, srv.Shutdown(shutdownCtx))
		}
		stopComponents()
		return errors.Join(errs...)
	})
	err := g.Wait()
	if errors.Is(err, context.Canceled) && ctx.Err() != nil {
		err = nil // stopped while a component was still starting
	}
	if cerr := m.env.log.Close(); cerr != nil && err == nil {
		err = cerr
	}
	return err
}
