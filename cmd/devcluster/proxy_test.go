package main

import (
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"strings"
	"testing"

	"github.com/matrix-org/dendrite/cmd/devcluster/proxyroute"
	"github.com/matrix-org/dendrite/internal/config"
	"github.com/matrix-org/dendrite/internal/freeport"
)

// proxyCases are raw request paths (as a client sends them) and the process that must get
// them. Room and event IDs with an encoded slash (%2F) are one path segment, as the
// components' routers (gorilla/mux with UseEncodedPath) see them; docker/nginx.conf must
// agree (docker's TestNginxAgreesWithDevclusterProxy).
var proxyCases = map[string]string{
	"/_matrix/client/v3/sync":                                 proxyroute.SyncAPI,
	"/_matrix/client/r0/sync?since=s1&timeout=30000":          proxyroute.SyncAPI,
	"/_matrix/client/r0/events?from=s1&timeout=30000":         proxyroute.SyncAPI,
	"/_matrix/client/v3/events/$e%3Ab":                        proxyroute.ClientAPI,
	"/_matrix/client/v3/rooms/!a%3Ab/messages":                proxyroute.SyncAPI,
	"/_matrix/client/v3/rooms/!a%2Fb%3Ab/messages":            proxyroute.SyncAPI,
	"/_matrix/client/v3/rooms/!a%2Fb%3Ab/messages?dir=b":      proxyroute.SyncAPI,
	"/_matrix/client/v3/rooms/!a%3Ab/context/$e%3Ab":          proxyroute.SyncAPI,
	"/_matrix/client/v3/rooms/!a%2Fb%3Ab/context/$e":          proxyroute.SyncAPI,
	"/_matrix/client/v3/rooms/!a%3Ab/context/$ab%2Fcd":        proxyroute.SyncAPI,
	"/_matrix/client/v3/rooms/!a%3Ab/context/$ab/cd":          proxyroute.ClientAPI,
	"/_matrix/client/v3/rooms/!a%3Ab/event/$e%3Ab":            proxyroute.SyncAPI,
	"/_matrix/client/versions":                                proxyroute.ClientAPI,
	"/_matrix/client/v3/login":                                proxyroute.ClientAPI,
	"/_matrix/client/v3/rooms/!a%3Ab/send/m.room.message/1":   proxyroute.ClientAPI,
	"/_matrix/client/v3/rooms/!a%3Ab/state/m.room.topic/":     proxyroute.ClientAPI,
	"/_matrix/client/v3/rooms/!a%3Ab/state/x/a%2Fmessages":    proxyroute.ClientAPI,
	"/_matrix/client/v3/rooms/!a%3Ab/send/m.t/txn%2Fmessages": proxyroute.ClientAPI,
	"/_matrix/client/v3/rooms/!a%3Ab/messages/extra":          proxyroute.ClientAPI,
	"/_matrix/client/v3/rooms/!a/b%3Ab/messages":              proxyroute.ClientAPI,
	"/_matrix/client/v3/user/@a%3Ab/filter":                   proxyroute.ClientAPI,
	"/_synapse/admin/v1/register":                             proxyroute.ClientAPI,
	"/_matrix/federation/v1/version":                          proxyroute.FederationAPI,
	"/_matrix/federation/v1/send/t%2F1":                       proxyroute.FederationAPI,
	"/_matrix/key/v2/server":                                  proxyroute.FederationAPI,
	"/_matrix/client":                                         "",
	"/metrics":                                                "",
	"/debug/pprof/":                                           "",
}

// TestProxyRoutesEncodedPaths sends every case through devcluster's proxy over loopback to
// three stand-in processes and checks which one got it, with the path exactly as sent.
func TestProxyRoutesEncodedPaths(t *testing.T) {
	type hit struct{ process, uri string }
	hits := make(chan hit, 1)
	cfg := config.Defaults()
	for process, listen := range map[string]*string{proxyroute.ClientAPI: &cfg.ClientAPI.Listen, proxyroute.SyncAPI: &cfg.SyncAPI.Listen, proxyroute.FederationAPI: &cfg.FederationAPI.Listen} {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			hits <- hit{process, r.RequestURI}
		}))
		t.Cleanup(srv.Close)
		*listen = srv.Listener.Addr().String()
	}
	front := httptest.NewServer(newProxy(&cluster{cfg: cfg}))
	t.Cleanup(front.Close)
	for uri, want := range proxyCases {
		conn, err := net.Dial("tcp", front.Listener.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		// A raw request line: net/http's client would normalise nothing here, but this
		// shows plainly what goes over the wire.
		if _, err := io.WriteString(conn, "GET "+uri+" HTTP/1.1\r\nHost: example.org\r\nConnection: close\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		body, err := io.ReadAll(conn)
		conn.Close()
		if err != nil {
			t.Fatal(err)
		}
		var got hit
		select {
		case got = <-hits:
		default:
		}
		if got.process != want {
			t.Errorf("%s went to %q, want %q (response %q)", uri, got.process, want, strings.SplitN(string(body), "\r\n", 2)[0])
		}
		if want != "" && got.uri != uri {
			t.Errorf("%s reached %s as %s", uri, want, got.uri)
		}
		if got.process != proxyroute.Route(strings.SplitN(uri, "?", 2)[0]) {
			t.Errorf("%s: the proxy disagrees with proxyroute.Route", uri)
		}
	}
}

// TestProxyComponentDown sends requests through the proxy to a component that refuses
// connections, and to one that drops them without an answer: Matrix errors, 503 with
// Retry-After and 502, never an empty body.
func TestProxyComponentDown(t *testing.T) {
	cfg := config.Defaults()
	refused, err := freeport.Addr() // nothing listens there
	if err != nil {
		t.Fatal(err)
	}
	cfg.ClientAPI.Listen = refused
	dropper := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		conn, _, err := w.(http.Hijacker).Hijack()
		if err == nil {
			_ = conn.Close() // drop the request without an answer
		}
	}))
	t.Cleanup(dropper.Close)
	cfg.SyncAPI.Listen = dropper.Listener.Addr().String()
	front := httptest.NewServer(newProxy(&cluster{cfg: cfg}))
	t.Cleanup(front.Close)
	for path, want := range map[string]int{"/_matrix/client/v3/login": http.StatusServiceUnavailable, "/_matrix/client/v3/sync": http.StatusBadGateway} {
		res, err := http.Get(front.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		var body map[string]any
		derr := json.NewDecoder(res.Body).Decode(&body)
		res.Body.Close()
		if res.StatusCode != want || derr != nil || body["errcode"] != "M_UNKNOWN" || body["error"] == "" {
			t.Fatalf("%s: %d %v (%v), want %d with a Matrix error", path, res.StatusCode, body, derr, want)
		}
		if want == http.StatusServiceUnavailable && res.Header.Get("Retry-After") == "" {
			t.Fatalf("%s: 503 without Retry-After", path)
		}
	}
}

// TestProxyAnswersUnroutedAsMatrix: paths the proxy routes nowhere get the components'
// answer for unknown endpoints (JSON 404 M_UNRECOGNIZED with CORS headers), and a
// preflight to them succeeds.
func TestProxyAnswersUnroutedAsMatrix(t *testing.T) {
	p := &proxy{targets: map[string]*httputil.ReverseProxy{}}
	for _, tc := range []struct {
		method, path string
		status       int
		body         string
	}{
		{http.MethodGet, "/_matrix/media/v3/config", http.StatusNotFound, `{"errcode":"M_UNRECOGNIZED","error":"unrecognized request"}`},
		{http.MethodGet, "/nope", http.StatusNotFound, `{"errcode":"M_UNRECOGNIZED","error":"unrecognized request"}`},
		{http.MethodOptions, "/_matrix/media/v3/config", http.StatusOK, ""},
		{http.MethodGet, "/health", http.StatusOK, `{"status":"ok"}`},
	} {
		w := httptest.NewRecorder()
		p.ServeHTTP(w, httptest.NewRequest(tc.method, tc.path, nil))
		if w.Code != tc.status || w.Body.String() != tc.body {
			t.Fatalf("%s %s: %d %s, want %d %s", tc.method, tc.path, w.Code, w.Body, tc.status, tc.body)
		}
		if w.Header().Get("Access-Control-Allow-Origin") != "*" || !strings.Contains(w.Header().Get("Access-Control-Allow-Headers"), "Authorization") {
			t.Fatalf("%s %s: no CORS headers: %v", tc.method, tc.path, w.Header())
		}
	}
}
