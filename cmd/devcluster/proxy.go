package main

import (
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strconv"
	"sync"
	"time"

	"github.com/matrix-org/dendrite/cmd/devcluster/proxyroute"
	dhttputil "github.com/matrix-org/dendrite/internal/httputil"
	"github.com/matrix-org/dendrite/internal/matrixerr"
)

// proxy is the front proxy, plus devcluster's own endpoints: /health, /ready (every
// component ready) and /_devcluster/status (processes, PIDs, readiness) for tests.
type proxy struct {
	c       *cluster
	targets map[string]*httputil.ReverseProxy
}

func newProxy(c *cluster) *proxy {
	p := &proxy{c: c, targets: map[string]*httputil.ReverseProxy{}}
	// http.DefaultTransport keeps 2 idle connections per host: with more concurrent
	// clients than that, most requests would dial a new connection to the component and
	// close it afterwards. Keep one per client instead.
	transport := &http.Transport{
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:        1000,
		MaxIdleConnsPerHost: 500,
		IdleConnTimeout:     90 * time.Second,
	}
	for name, addr := range map[string]string{proxyroute.ClientAPI: c.cfg.ClientAPI.Listen, proxyroute.SyncAPI: c.cfg.SyncAPI.Listen, proxyroute.FederationAPI: c.cfg.FederationAPI.Listen,
		proxyroute.MediaAPI: c.cfg.MediaAPI.Listen, proxyroute.PushServer: c.cfg.PushServer.Listen,
		proxyroute.SearchAPI: c.cfg.SearchAPI.Listen} {
		target := &url.URL{Scheme: "http", Host: addr}
		p.targets[name] = &httputil.ReverseProxy{Transport: transport, Rewrite: func(r *httputil.ProxyRequest) {
			r.SetURL(target)
			r.SetXForwarded()
		}, ErrorHandler: proxyError}
	}
	return p
}

func (p *proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Path {
	case "/health":
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
		return
	case "/ready", "/_devcluster/status":
		st := p.status(r)
		code := http.StatusOK
		if !st.Ready {
			code = http.StatusServiceUnavailable
		}
		writeJSON(w, code, st)
		return
	}
	// The escaped path, as the components' routers match it (proxyroute).
	target := p.targets[proxyroute.Route(r.URL.EscapedPath())]
	if target == nil {
		dhttputil.UnknownEndpoint(w, r)
		return
	}
	target.ServeHTTP(w, r)
}

// clusterStatus is /_devcluster/status.
type clusterStatus struct {
	Ready      bool         `json:"ready"`
	Partitions int32        `json:"partitions"`
	Shards     int          `json:"shards"`
	Processes  []procStatus `json:"processes"`
	// Broker is the Kafka-protocol broker's process (ready while it runs).
	Broker procStatus `json:"broker"`
	// Postgres is the throwaway PostgreSQL cluster the components share.
	Postgres pgStatus `json:"postgres"`
}

// pgStatus is the PostgreSQL server: its postmaster's PID (the backends serving the
// components' connections are its children; 0 if its pid file cannot be read) and the DSN
// of the components' database.
type pgStatus struct {
	PID int    `json:"pid"`
	DSN string `json:"dsn"`
}

type procStatus struct {
	Name      string `json:"name"`
	Component string `json:"component"`
	Shard     int    `json:"shard"`
	PID       int    `json:"pid"`
	// Starts counts how often the process was started (restarts after crashes included).
	Starts int  `json:"starts"`
	Ready  bool `json:"ready"`
	// Internal is the process's internal address (its /metrics and /debug/pprof/); "" for
	// the broker.
	Internal string `json:"internal,omitempty"`
	// Data is the broker's log directory ("" for the components, and for a broker kept in
	// memory by --broker-in-memory).
	Data string `json:"data,omitempty"`
	// CPUCgroup is the process's cgroup under --roomserver-cpu-quota, with the CPU time its
	// processes used since devcluster started (cpuacct.usage, restarts included) and how
	// long the cap held them back (cpu.stat throttled_time).
	CPUCgroup        string  `json:"cpu_cgroup,omitempty"`
	CPUSeconds       float64 `json:"cpu_seconds,omitempty"`
	ThrottledSeconds float64 `json:"throttled_seconds,omitempty"`
}

func (p *proxy) status(r *http.Request) clusterStatus {
	st := clusterStatus{Ready: true, Partitions: p.c.cfg.Global.Log.Partitions, Shards: p.c.o.shards, Processes: make([]procStatus, len(p.c.procs))}
	var wg sync.WaitGroup
	for i, pr := range p.c.procs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			pid, starts := pr.pid()
			st.Processes[i] = procStatus{Name: pr.name, Component: pr.component, Shard: pr.shard, PID: pid, Starts: starts,
				Ready: pid != 0 && pr.ready(r.Context(), p.c.client), Internal: pr.internal}
			if g := pr.cgroup; g != nil {
				st.Processes[i].CPUCgroup = g.path()
				if u, err := g.usage(); err == nil {
					st.Processes[i].CPUSeconds = u.Seconds()
				}
				if d, err := g.throttled(); err == nil {
					st.Processes[i].ThrottledSeconds = d.Seconds()
				}
			}
		}()
	}
	wg.Wait()
	for _, ps := range st.Processes {
		st.Ready = st.Ready && ps.Ready
	}
	pid, starts := p.c.broker.pid()
	st.Broker = procStatus{Name: p.c.broker.name, Component: p.c.broker.component, PID: pid, Starts: starts, Ready: pid != 0,
		Data: p.c.brokerData}
	st.Ready = st.Ready && st.Broker.Ready
	st.Postgres.DSN = p.c.cfg.Global.Database.ConnectionString
	st.Postgres.PID, _ = p.c.pg.PID() // 0 when the pid file is unreadable, as documented
	return st
}

// proxyError answers a request the component could not serve with a Matrix error, not
// ReverseProxy's empty 502: 503 with Retry-After while the component refuses connections
// (down or restarting, as the supervisor starts it again), 502 for any other failure.
func proxyError(w http.ResponseWriter, r *http.Request, err error) {
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "dial" {
		e := matrixerr.Unavailable(time.Second)
		w.Header().Set("Retry-After", strconv.FormatInt((e.RetryAfterMS+999)/1000, 10))
		writeJSON(w, e.Status, e)
		return
	}
	if r.Context().Err() != nil {
		return // the client went away
	}
	writeJSON(w, http.StatusBadGateway, matrixerr.BadGateway("the server could not answer, retry later"))
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, _ := json.Marshal(v) // plain data always encodes
	dhttputil.SetCORS(w.Header())
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(b) // the caller may have gone
}
