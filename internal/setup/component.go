package setup

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/mux"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/sirupsen/logrus"
	"golang.org/x/sync/errgroup"

	asinthttp "github.com/matrix-org/dendrite/appservice/inthttp"
	eduapi "github.com/matrix-org/dendrite/eduserver/api"
	eduinthttp "github.com/matrix-org/dendrite/eduserver/inthttp"
	finthttp "github.com/matrix-org/dendrite/federationapi/inthttp"
	fsinthttp "github.com/matrix-org/dendrite/federationsender/inthttp"
	"github.com/matrix-org/dendrite/internal/config"
	"github.com/matrix-org/dendrite/internal/eventlog"
	"github.com/matrix-org/dendrite/internal/httputil"
	ihttp "github.com/matrix-org/dendrite/internal/inthttp"
	presenceapi "github.com/matrix-org/dendrite/presenceserver/api"
	presenceinthttp "github.com/matrix-org/dendrite/presenceserver/inthttp"
	pushapi "github.com/matrix-org/dendrite/pushserver/api"
	pushinthttp "github.com/matrix-org/dendrite/pushserver/inthttp"
	receiptapi "github.com/matrix-org/dendrite/receiptserver/api"
	receiptinthttp "github.com/matrix-org/dendrite/receiptserver/inthttp"
	rsapi "github.com/matrix-org/dendrite/roomserver/api"
	rsinthttp "github.com/matrix-org/dendrite/roomserver/inthttp"
	syncinthttp "github.com/matrix-org/dendrite/syncapi/inthttp"
	uapi "github.com/matrix-org/dendrite/userapi/api"
	uinthttp "github.com/matrix-org/dendrite/userapi/inthttp"
)

// ComponentOptions selects what one polylith process runs.
type ComponentOptions struct {
	// Name is a row of the wiring table: one of config.Components.
	Name string
	// Shard is the roomserver shard this process runs, 0 <= Shard < room_server.shards.
	Shard int
	// InternalListen and PublicListen, when set, replace the component's internal_api.listen
	// and its public listen (clientapi and syncapi) from the config.
	InternalListen, PublicListen string
}

// RunComponent runs one component as a polylith process until ctx ends. It listens at once:
// /health answers while the process lives, /ready only once the event log (Kafka) and the
// databases are reached and the component is built. Until then it retries with backoff,
// logging, rather than exiting, so a broker or database that starts later never makes the
// process crash-loop. The internal API (and for clientapi and syncapi the public client
// routes) answer 503 until the component is ready. Peers are reached through inthttp clients
// at their internal_api.connect URLs; roomserver shards through one sharded client.
func RunComponent(ctx context.Context, cfg *config.Dendrite, logger *logrus.Logger, opts ComponentOptions) error {
	c, ok := lookup(opts.Name)
	if !ok {
		return fmt.Errorf("unknown component %q (want one of %v)", opts.Name, config.Components)
	}
	if cfg.Global.Log.Kind != "kafka" {
		return errors.New("a polylith component needs global.log.kind: kafka (the embedded log lives inside one process)")
	}
	if opts.Shard < 0 || (c.name == "roomserver" && opts.Shard >= cfg.RoomServer.Shards) || (c.name != "roomserver" && opts.Shard != 0) {
		return fmt.Errorf("shard %d: only the roomserver has shards, 0 to room_server.shards-1 (%d)", opts.Shard, cfg.RoomServer.Shards-1)
	}
	p, err := newProcess(cfg, logger, c, opts)
	if err != nil {
		return err
	}
	return p.run(ctx)
}

// process is one polylith process: its listeners, its single component and their state.
type process struct {
	c      component
	e      *env
	opts   ComponentOptions
	log    *logrus.Entry
	server ihttp.ServerOptions

	internalL, publicL net.Listener
	// waiting says what the process still waits for; "" once the component runs.
	waiting atomic.Pointer[string]
	// internalAPI and public are installed once the component is built.
	internalAPI, public atomic.Pointer[http.Handler]

	// base holds the process's own metrics; current those of the component's latest build
	// attempt (a failed attempt's metrics are dropped with its registry).
	base    *prometheus.Registry
	current atomic.Pointer[prometheus.Registry]

	mu    sync.Mutex
	kafka *eventlog.Kafka
}

func newProcess(cfg *config.Dendrite, logger *logrus.Logger, c component, opts ComponentOptions) (*process, error) {
	e, err := newEnv(cfg, logger)
	if err != nil {
		return nil, err
	}
	e.shard = opts.Shard
	p := &process{c: c, e: e, opts: opts, log: e.component(c.name), base: prometheus.NewRegistry()}
	if c.name == "roomserver" {
		p.log = p.log.WithField("shard", opts.Shard)
	}
	warnConfig(cfg, p.log, c.name == "clientapi")
	if err = applyMemoryLimits(cfg, p.log); err != nil {
		return nil, err
	}
	p.base.MustRegister(processCollectors()...)
	metrics := ihttp.NewMetrics(p.base)
	p.server = ihttp.ServerOptions{Logger: p.log, Metrics: metrics}
	clientOpts := ihttp.ClientOptions{Metrics: metrics}
	var urls []string
	for i := range cfg.RoomServer.Shards {
		urls = append(urls, cfg.RoomServer.ShardURL(i))
	}
	if e.roomserver, err = rsinthttp.NewShardedClient(urls, cfg.Global.Log.Partitions, clientOpts); err != nil {
		return nil, err
	}
	// Tokens are looked up on every request: remember them briefly (the revocation bound is
	// in api.DeviceCache).
	e.users = uapi.NewDeviceCache(uinthttp.NewClient(cfg.UserAPI.InternalAPI.Connect, clientOpts), uapi.DeviceCacheTTL)
	e.presence = presenceinthttp.NewClient(cfg.PresenceServer.InternalAPI.Connect, clientOpts)
	e.edu = eduinthttp.NewClient(cfg.EDUServer.InternalAPI.Connect, clientOpts)
	e.receipts = receiptinthttp.NewClient(cfg.ReceiptServer.InternalAPI.Connect, clientOpts)
	e.push = pushinthttp.NewClient(cfg.PushServer.InternalAPI.Connect, clientOpts)
	e.keys = finthttp.NewClient(cfg.FederationAPI.InternalAPI.Connect, clientOpts)
	e.sender = fsinthttp.NewClient(cfg.FederationSender.InternalAPI.Connect, clientOpts)
	e.appServices = asinthttp.NewClient(cfg.AppServiceAPI.InternalAPI.Connect, clientOpts)
	e.peeks = syncinthttp.NewClient(cfg.SyncAPI.InternalAPI.Connect, clientOpts)
	p.setWaiting("starting")
	internal, public := c.listen(cfg)
	if opts.InternalListen != "" {
		internal = opts.InternalListen
	}
	if opts.PublicListen != "" {
		public = opts.PublicListen
	}
	if p.internalL, err = net.Listen("tcp", internal); err != nil {
		return nil, fmt.Errorf("internal API listener: %w", err)
	}
	if public != "" {
		if p.publicL, err = net.Listen("tcp", public); err != nil {
			_ = p.internalL.Close() // the process does not start
			return nil, fmt.Errorf("public listener: %w", err)
		}
	}
	return p, nil
}

func (p *process) setWaiting(what string) {
	p.waiting.Store(&what)
}

// ready is /ready: the component is built and its event log and databases answer.
func (p *process) ready(ctx context.Context) error {
	if w := *p.waiting.Load(); w != "" {
		return errors.New(w) // until then the component, and its log, are not set
	}
	return p.e.ready(ctx)
}

// internalRouter serves /health, /ready, /metrics (unless global.metrics.enabled is off)
// and the Go profiler (/debug/pprof/) at once, and the internal API once installed. The
// listener is bound to an internal address (DESIGN 9), so metrics and the profiler are for
// operators only; the public listener serves neither.
func (p *process) internalRouter() http.Handler {
	router := mux.NewRouter()
	httputil.Health(router, p.ready)
	operatorRoutes(router, p.e.cfg.Global.Metrics.Enabled, prometheus.GathererFunc(p.gather))
	router.PathPrefix(ihttp.PathPrefix).Handler(installed(&p.internalAPI))
	return router
}

// operatorRoutes registers /metrics (when metrics is set) and the Go profiler under
// /debug/pprof/: routes for an internal or operator-only listener, never a public one.
func operatorRoutes(router *mux.Router, metrics bool, g prometheus.Gatherer) {
	if metrics {
		router.Handle("/metrics", httputil.MetricsHandler(g))
	}
	router.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	router.HandleFunc("/debug/pprof/profile", pprof.Profile)
	router.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	router.HandleFunc("/debug/pprof/trace", pprof.Trace)
	router.PathPrefix("/debug/pprof/").HandlerFunc(pprof.Index)
}

// gather collects the process's metrics and the component's.
func (p *process) gather() ([]*dto.MetricFamily, error) {
	gs := prometheus.Gatherers{p.base}
	if r := p.current.Load(); r != nil {
		gs = append(gs, r)
	}
	return gs.Gather()
}

// installed serves with the handler h points to, or 503 until there is one.
func installed(h *atomic.Pointer[http.Handler]) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if hp := h.Load(); hp != nil {
			(*hp).ServeHTTP(w, r)
			return
		}
		httputil.SetCORS(w.Header())
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Retry-After", "1")
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = w.Write([]byte(`{"errcode":"M_UNKNOWN","error":"starting"}`)) // the caller may have gone
	})
}

func (p *process) run(ctx context.Context) error {
	defer p.e.closeDBs()
	fields := logrus.Fields{"internal_address": p.internalL.Addr().String()}
	servers := []*http.Server{{Handler: p.internalRouter(), ReadHeaderTimeout: 10 * time.Second}}
	listeners := []net.Listener{p.internalL}
	if p.publicL != nil {
		servers = append(servers, &http.Server{Handler: installed(&p.public), ReadHeaderTimeout: 10 * time.Second})
		listeners = append(listeners, p.publicL)
		fields["public_address"] = p.publicL.Addr().String()
	}
	p.log.WithFields(fields).Info("dendrite component listening")
	g, gctx := errgroup.WithContext(ctx)
	for i, srv := range servers {
		g.Go(func() error {
			if err := srv.Serve(listeners[i]); !errors.Is(err, http.ErrServerClosed) {
				return err
			}
			return nil
		})
	}
	compCtx, stopComponent := context.WithCancel(context.Background())
	defer stopComponent()
	g.Go(func() error {
		b, err := p.start(gctx)
		if err != nil || b.run == nil {
			return err
		}
		return b.run(compCtx)
	})
	g.Go(func() error {
		<-gctx.Done()
		shutdownCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		var errs []error
		for _, srv := range servers {
			errs = append(errs, srv.Shutdown(shutdownCtx))
		}
		stopComponent()
		return errors.Join(errs...)
	})
	err := g.Wait()
	if errors.Is(err, context.Canceled) && ctx.Err() != nil {
		err = nil // stopped while still starting
	}
	p.mu.Lock()
	k := p.kafka
	p.mu.Unlock()
	if k != nil {
		if cerr := k.Close(); cerr != nil && err == nil {
			err = cerr
		}
	}
	p.log.Info("dendrite component stopped")
	return err
}

// kafkaConfig is the Kafka log's configuration for a process named clientID.
func (e *env) kafkaConfig(clientID string, metrics *eventlog.Metrics, logger *logrus.Entry) eventlog.KafkaConfig {
	lc := e.cfg.Global.Log
	return eventlog.KafkaConfig{
		Config: eventlog.Config{
			DefaultPartitions: lc.Partitions, Retention: time.Duration(lc.Retention), Metrics: metrics, Logger: logger,
		},
		Brokers: lc.Kafka.Brokers, ClientID: clientID,
		Topics: []string{e.topic(rsapi.TopicInputRoomEvent), e.topic(rsapi.TopicOutputRoomEvent), e.topic(uapi.TopicOutputClientData), e.topic(uapi.TopicOutputKeyChangeEvent), e.topic(uapi.TopicInputDeviceListUpdate),
			e.topic(eduapi.TopicInputTyping), e.topic(eduapi.TopicOutputTypingEvent), e.topic(eduapi.TopicInputSendToDevice),
			e.topic(eduapi.TopicOutputSendToDeviceEvent), e.topic(receiptapi.TopicInputReceipt), e.topic(receiptapi.TopicOutputReceiptEvent),
			e.topic(presenceapi.TopicInputPresence), e.topic(presenceapi.TopicOutputPresenceEvent), e.topic(pushapi.TopicOutputNotificationData)},
		MaxMessageBytes: lc.Kafka.MaxMessageBytes, ReplicationFactor: int16(lc.Kafka.ReplicationFactor),
	}
}

// start connects to Kafka and builds the component, retrying until ctx ends; then it
// installs the component's handlers and reports ready.
func (p *process) start(ctx context.Context) (*built, error) {
	p.setWaiting("connecting to the event log (kafka)")
	clientID := "dendrite-" + p.c.name
	if p.c.name == "roomserver" {
		clientID += "-" + strconv.Itoa(p.opts.Shard)
	}
	p.e.logMetrics = eventlog.NewMetrics(p.base)
	k, err := eventlog.NewKafka(ctx, p.e.kafkaConfig(clientID, p.e.logMetrics, p.log))
	if err != nil {
		return nil, err
	}
	p.mu.Lock()
	p.kafka = k
	p.mu.Unlock()
	p.e.log = k
	p.log.Info("event log connected")

	delay := 100 * time.Millisecond
	var b *built
	for {
		p.setWaiting("building " + p.c.name)
		p.e.registry = prometheus.NewRegistry()
		p.current.Store(p.e.registry)
		if b, err = p.c.build(ctx, p.e); err == nil {
			break
		}
		p.e.closeDBs()
		p.log.WithError(err).Warn("component not built; retrying")
		p.setWaiting(fmt.Sprintf("building %s: %v", p.c.name, err))
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(delay):
		}
		delay = min(delay*2, 5*time.Second)
	}
	if b.serve != nil {
		router := mux.NewRouter()
		b.serve(router, p.server)
		var h http.Handler = router
		p.internalAPI.Store(&h)
	}
	if p.publicL != nil {
		var h http.Handler = publicRouter(p.e, p.c.name, b.routes, b.fedRoutes, b.mediaRoutes, p.ready)
		p.public.Store(&h)
	}
	p.setWaiting("")
	p.log.Info("dendrite component ready")
	return b, nil
}
