package inthttp_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/mux"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/sirupsen/logrus"
	logtest "github.com/sirupsen/logrus/hooks/test"

	"github.com/matrix-org/dendrite/internal/inthttp"
	"github.com/matrix-org/dendrite/internal/matrixerr"
)

type EchoRequest struct {
	Text  string            `json:"text"`
	Tags  map[string]string `json:"tags,omitempty"`
	Empty bool              `json:"empty,omitempty"`
}

type EchoResponse struct {
	Text string            `json:"text"`
	Tags map[string]string `json:"tags,omitempty"`
}

type FailRequest struct {
	Kind string `json:"kind"`
}

type FailResponse struct{}

type WaitRequest struct {
	Block bool `json:"block"`
}

type WaitResponse struct {
	HadDeadline bool          `json:"had_deadline"`
	Left        time.Duration `json:"left"`
}

// testAPI is an interface in the shape every component's api has.
type testAPI interface {
	Echo(ctx context.Context, req *EchoRequest) (*EchoResponse, error)
	Fail(ctx context.Context, req *FailRequest) (*FailResponse, error)
	Wait(ctx context.Context, req *WaitRequest) (*WaitResponse, error)
}

const secret = "pq: password authentication failed for user dendrite"

var failures = map[string]error{
	"forbidden":     matrixerr.Forbidden("not a member of this room"),
	"limit":         matrixerr.LimitExceeded(1500 * time.Millisecond),
	"version":       &matrixerr.Error{Code: "M_INCOMPATIBLE_ROOM_VERSION", Message: "join a v12 room", Status: 400, RoomVersion: "12"},
	"backup":        matrixerr.WrongRoomKeysVersion("7"),
	"no_status":     &matrixerr.Error{Code: "M_UNKNOWN", Message: "status not set"},
	"wrapped":       fmt.Errorf("check membership: %w", matrixerr.NotFound("unknown room")),
	"internal":      fmt.Errorf("select rooms: %s", secret),
	"deadline_self": fmt.Errorf("query: %w", context.DeadlineExceeded),
}

type impl struct {
	calls       atomic.Int32
	waitStarted chan struct{}
	waitEnded   chan error
}

func (s *impl) Echo(_ context.Context, req *EchoRequest) (*EchoResponse, error) {
	s.calls.Add(1)
	if req.Empty {
		return nil, nil
	}
	return &EchoResponse{Text: req.Text, Tags: req.Tags}, nil
}

func (s *impl) Fail(_ context.Context, req *FailRequest) (*FailResponse, error) {
	s.calls.Add(1)
	if req.Kind == "panic" {
		panic(secret)
	}
	return nil, failures[req.Kind]
}

// Wait reports the deadline it sees, or blocks until its context ends.
func (s *impl) Wait(ctx context.Context, req *WaitRequest) (*WaitResponse, error) {
	s.calls.Add(1)
	if !req.Block {
		d, ok := ctx.Deadline()
		return &WaitResponse{HadDeadline: ok, Left: time.Until(d)}, nil
	}
	s.waitStarted <- struct{}{}
	<-ctx.Done()
	s.waitEnded <- ctx.Err()
	return nil, ctx.Err()
}

type pair struct {
	impl   *impl
	client *inthttp.Client
	server *inthttp.Server
	url    string
	logs   *logtest.Hook
}

func newPair(t *testing.T, sopts inthttp.ServerOptions, copts inthttp.ClientOptions) *pair {
	t.Helper()
	logger, hook := logtest.NewNullLogger()
	logger.SetLevel(logrus.DebugLevel)
	sopts.Logger = logrus.NewEntry(logger)
	router := mux.NewRouter()
	srv := inthttp.NewServer(router, "test", sopts)
	im := &impl{waitStarted: make(chan struct{}, 1), waitEnded: make(chan error, 1)}
	inthttp.Serve(srv, im.Echo)
	inthttp.Serve(srv, im.Fail)
	inthttp.Serve(srv, im.Wait)
	hs := httptest.NewServer(router)
	t.Cleanup(hs.Close)
	return &pair{impl: im, client: inthttp.NewClient(hs.URL, "test", copts), server: srv, url: hs.URL, logs: hook}
}

func TestRoundTrip(t *testing.T) {
	p := newPair(t, inthttp.ServerOptions{}, inthttp.ClientOptions{})
	ctx := context.Background()
	req := &EchoRequest{Text: "héllo \u2028 \"world\"", Tags: map[string]string{"a": "b"}}
	res, err := inthttp.Call[EchoResponse](ctx, p.client, req)
	if err != nil {
		t.Fatal(err)
	}
	if res.Text != req.Text || !reflect.DeepEqual(res.Tags, req.Tags) {
		t.Fatalf("got %+v", res)
	}
	// A nil answer stays nil, as in a direct call.
	res, err = inthttp.Call[EchoResponse](ctx, p.client, &EchoRequest{Empty: true})
	if err != nil || res != nil {
		t.Fatalf("nil answer: got %+v, %v", res, err)
	}
}

func TestRouteIsDerivedFromTheMethodName(t *testing.T) {
	p := newPair(t, inthttp.ServerOptions{}, inthttp.ClientOptions{})
	res, err := http.Post(p.url+"/_internal/test/Echo", "application/json", strings.NewReader(`{"text":"x"}`))
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close() //nolint:errcheck // test
	b, _ := io.ReadAll(res.Body)
	if res.StatusCode != 200 || string(b) != `{"text":"x"}` {
		t.Fatalf("POST /_internal/test/Echo: %d %s", res.StatusCode, b)
	}
	if got := inthttp.Path("test", "Echo"); got != "/_internal/test/Echo" {
		t.Fatal(got)
	}
	if name, err := inthttp.MethodName[EchoRequest](); err != nil || name != "Echo" {
		t.Fatal(name, err)
	}
	if _, err := inthttp.MethodName[EchoResponse](); err == nil {
		t.Fatal("a response type named a method")
	}
	// Only POST is routed.
	res, err = http.Get(p.url + "/_internal/test/Echo")
	if err != nil {
		t.Fatal(err)
	}
	_ = res.Body.Close() // test; nothing to do
	if res.StatusCode != http.StatusMethodNotAllowed {
		t.Fatalf("GET: %d", res.StatusCode)
	}
}

func TestMatrixErrorSurvives(t *testing.T) {
	p := newPair(t, inthttp.ServerOptions{}, inthttp.ClientOptions{})
	for _, kind := range []string{"forbidden", "limit", "version", "no_status", "wrapped"} {
		t.Run(kind, func(t *testing.T) {
			var want *matrixerr.Error
			if !errors.As(failures[kind], &want) {
				t.Fatal("not a matrix error")
			}
			_, err := inthttp.Call[FailResponse](context.Background(), p.client, &FailRequest{Kind: kind})
			var got *matrixerr.Error
			if !errors.As(err, &got) {
				t.Fatalf("errors.As found no *matrixerr.Error in %v (%T)", err, err)
			}
			if *got != *want {
				t.Fatalf("got %+v, want %+v", *got, *want)
			}
		})
	}
}

func TestInternalErrorNotLeaked(t *testing.T) {
	p := newPair(t, inthttp.ServerOptions{}, inthttp.ClientOptions{})
	for _, kind := range []string{"internal", "panic"} {
		t.Run(kind, func(t *testing.T) {
			p.logs.Reset()
			_, err := inthttp.Call[FailResponse](context.Background(), p.client, &FailRequest{Kind: kind})
			if err == nil || strings.Contains(err.Error(), "password") {
				t.Fatalf("error leaked or missing: %v", err)
			}
			var merr *matrixerr.Error
			if errors.As(err, &merr) {
				t.Fatalf("internal error became a Matrix error: %+v", merr)
			}
			var rerr *inthttp.RemoteError
			if !errors.As(err, &rerr) || rerr.StatusCode != 500 || !rerr.Temporary() || rerr.Method != "Fail" {
				t.Fatalf("want a 500 RemoteError, got %#v", err)
			}
			// The detail is in the callee's log.
			logged := false
			for _, e := range p.logs.AllEntries() {
				s, _ := e.String()
				logged = logged || (e.Level == logrus.ErrorLevel && strings.Contains(s, "password"))
			}
			if !logged {
				t.Fatal("the internal error was not logged by the callee")
			}
		})
	}
}

func TestDeadlinePropagates(t *testing.T) {
	p := newPair(t, inthttp.ServerOptions{}, inthttp.ClientOptions{Timeout: time.Minute})
	t.Run("server side ends with the caller's deadline", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		defer cancel()
		start := time.Now()
		_, err := inthttp.Call[WaitResponse](ctx, p.client, &WaitRequest{Block: true})
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("want DeadlineExceeded, got %v", err)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Fatalf("call took %v", d)
		}
		<-p.impl.waitStarted
		select {
		case serr := <-p.impl.waitEnded:
			if serr == nil {
				t.Fatal("server context ended without error")
			}
		case <-time.After(5 * time.Second):
			t.Fatal("the server kept working after the caller's deadline")
		}
	})
	t.Run("caller without a deadline gets the default", func(t *testing.T) {
		res, err := inthttp.Call[WaitResponse](context.Background(), p.client, &WaitRequest{})
		if err != nil {
			t.Fatal(err)
		}
		if !res.HadDeadline || res.Left > time.Minute || res.Left < 50*time.Second {
			t.Fatalf("server saw %+v, want about a minute", res)
		}
	})
	t.Run("server stops when the caller cancels", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() {
			_, err := inthttp.Call[WaitResponse](ctx, p.client, &WaitRequest{Block: true})
			done <- err
		}()
		select {
		case <-p.impl.waitStarted:
		case <-time.After(5 * time.Second):
			t.Fatal("call never arrived")
		}
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Fatalf("want Canceled, got %v", err)
		}
		select {
		case <-p.impl.waitEnded:
		case <-time.After(5 * time.Second):
			t.Fatal("the server kept working after the caller went away")
		}
	})
	t.Run("expired context fails at once", func(t *testing.T) {
		ctx, cancel := context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
		defer cancel()
		before := p.impl.calls.Load()
		start := time.Now()
		_, err := inthttp.Call[EchoResponse](ctx, p.client, &EchoRequest{Text: "late"})
		if !errors.Is(err, context.DeadlineExceeded) || time.Since(start) > time.Second {
			t.Fatalf("got %v after %v", err, time.Since(start))
		}
		if p.impl.calls.Load() != before {
			t.Fatal("an expired call reached the server")
		}
	})
	t.Run("callee's own deadline error is a timeout, not a leak", func(t *testing.T) {
		_, err := inthttp.Call[FailResponse](context.Background(), p.client, &FailRequest{Kind: "deadline_self"})
		var rerr *inthttp.RemoteError
		if !errors.As(err, &rerr) || rerr.StatusCode != 500 {
			t.Fatalf("want a 500 RemoteError (the caller's deadline had not passed), got %v", err)
		}
	})
	t.Run("expired timeout header is refused", func(t *testing.T) {
		req, _ := http.NewRequest(http.MethodPost, p.url+"/_internal/test/Echo", strings.NewReader(`{}`))
		req.Header.Set(inthttp.HeaderTimeout, "0")
		before := p.impl.calls.Load()
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_ = res.Body.Close() // test; nothing to do
		if res.StatusCode != http.StatusGatewayTimeout || p.impl.calls.Load() != before {
			t.Fatalf("status %d, calls %d -> %d", res.StatusCode, before, p.impl.calls.Load())
		}
	})
}

func TestOversizedBodyRefused(t *testing.T) {
	p := newPair(t, inthttp.ServerOptions{MaxBodyBytes: 1024}, inthttp.ClientOptions{})
	if _, err := inthttp.Call[EchoResponse](context.Background(), p.client, &EchoRequest{Text: strings.Repeat("x", 900)}); err != nil {
		t.Fatalf("a body under the limit: %v", err)
	}
	before := p.impl.calls.Load()
	_, err := inthttp.Call[EchoResponse](context.Background(), p.client, &EchoRequest{Text: strings.Repeat("x", 2000)})
	var rerr *inthttp.RemoteError
	if !errors.As(err, &rerr) || rerr.StatusCode != http.StatusRequestEntityTooLarge || rerr.Temporary() {
		t.Fatalf("want a 413 RemoteError, got %v", err)
	}
	if p.impl.calls.Load() != before {
		t.Fatal("the oversized request reached the method")
	}
}

func TestRefusals(t *testing.T) {
	p := newPair(t, inthttp.ServerOptions{}, inthttp.ClientOptions{})
	t.Run("undecodable body", func(t *testing.T) {
		res, err := http.Post(p.url+"/_internal/test/Echo", "application/json", strings.NewReader(`{"text":1}`))
		if err != nil {
			t.Fatal(err)
		}
		_ = res.Body.Close() // test; nothing to do
		if res.StatusCode != http.StatusBadRequest || res.Header.Get(inthttp.HeaderError) != inthttp.ErrorInternal {
			t.Fatalf("status %d, %s %q", res.StatusCode, inthttp.HeaderError, res.Header.Get(inthttp.HeaderError))
		}
	})
	t.Run("answer not from this layer", func(t *testing.T) {
		c := inthttp.NewClient(p.url+"/nowhere", "test", inthttp.ClientOptions{})
		_, err := inthttp.Call[EchoResponse](context.Background(), c, &EchoRequest{})
		var rerr *inthttp.RemoteError
		if !errors.As(err, &rerr) || rerr.StatusCode != http.StatusNotFound {
			t.Fatalf("want a 404 RemoteError, got %v", err)
		}
	})
	t.Run("connection refused", func(t *testing.T) {
		hs := httptest.NewServer(http.NotFoundHandler())
		hs.Close()
		c := inthttp.NewClient(hs.URL, "test", inthttp.ClientOptions{})
		_, err := inthttp.Call[EchoResponse](context.Background(), c, &EchoRequest{})
		var rerr *inthttp.RemoteError
		if err == nil || errors.As(err, &rerr) {
			t.Fatalf("want a transport error, got %v", err)
		}
	})
}

func TestMethodsAndMissing(t *testing.T) {
	p := newPair(t, inthttp.ServerOptions{}, inthttp.ClientOptions{})
	names, err := inthttp.Methods(reflect.TypeFor[testAPI]())
	if err != nil || !reflect.DeepEqual(names, []string{"Echo", "Fail", "Wait"}) {
		t.Fatal(names, err)
	}
	if missing, err := inthttp.Missing(reflect.TypeFor[testAPI](), p.server); err != nil || len(missing) != 0 {
		t.Fatal(missing, err)
	}
	type bigger interface {
		testAPI
		Extra(ctx context.Context, req *EchoRequest) (*EchoResponse, error)
	}
	if _, err := inthttp.Methods(reflect.TypeFor[bigger]()); err == nil {
		t.Fatal("a method whose types are named for another method was accepted")
	}
	type more interface {
		testAPI
		Nothing(ctx context.Context, req *NothingRequest) (*NothingResponse, error)
	}
	if missing, err := inthttp.Missing(reflect.TypeFor[more](), p.server); err != nil || !reflect.DeepEqual(missing, []string{"Nothing"}) {
		t.Fatal(missing, err)
	}
}

type NothingRequest struct{}
type NothingResponse struct{}

type badName struct{}

func TestServeRefusesWiringBugs(t *testing.T) {
	srv := inthttp.NewServer(mux.NewRouter(), "test", inthttp.ServerOptions{})
	im := &impl{}
	inthttp.Serve(srv, im.Echo)
	for name, serve := range map[string]func(){
		"twice":        func() { inthttp.Serve(srv, im.Echo) },
		"request name": func() { inthttp.Serve(srv, func(context.Context, *badName) (*EchoResponse, error) { return nil, nil }) },
		"response name": func() {
			inthttp.Serve(srv, func(context.Context, *NothingRequest) (*EchoResponse, error) { return nil, nil })
		},
	} {
		t.Run(name, func(t *testing.T) {
			defer func() {
				if recover() == nil {
					t.Fatal("no panic")
				}
			}()
			serve()
		})
	}
}

func TestMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := inthttp.NewMetrics(reg)
	p := newPair(t, inthttp.ServerOptions{Metrics: m}, inthttp.ClientOptions{Metrics: m})
	ctx := context.Background()
	if _, err := inthttp.Call[EchoResponse](ctx, p.client, &EchoRequest{}); err != nil {
		t.Fatal(err)
	}
	_, _ = inthttp.Call[FailResponse](ctx, p.client, &FailRequest{Kind: "forbidden"}) // the error is the point
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]uint64{}
	for _, mf := range mfs {
		for _, metric := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range metric.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			key := labels["component"] + "/" + labels["method"] + "/" + labels["side"] + "/" + labels["outcome"]
			seen[key] = metric.GetHistogram().GetSampleCount()
		}
	}
	for _, key := range []string{"test/Echo/server/ok", "test/Echo/client/ok", "test/Fail/server/matrix_error", "test/Fail/client/matrix_error"} {
		if seen[key] != 1 {
			t.Errorf("%s: %d samples; all: %v", key, seen[key], seen)
		}
	}
}

// The wire form is a contract between processes of different versions: keep it stable.
func TestWireFormat(t *testing.T) {
	p := newPair(t, inthttp.ServerOptions{}, inthttp.ClientOptions{})
	for _, tc := range []struct {
		kind, header, body string
		status             int
	}{
		{"forbidden", "matrix", `{"errcode":"M_FORBIDDEN","error":"not a member of this room","status":403}`, 403},
		{"limit", "matrix", `{"errcode":"M_LIMIT_EXCEEDED","error":"too many requests","status":429,"retry_after_ms":1500}`, 429},
		{"version", "matrix", `{"errcode":"M_INCOMPATIBLE_ROOM_VERSION","error":"join a v12 room","status":400,"room_version":"12"}`, 400},
		{"internal", "internal", `{"errcode":"M_UNKNOWN","error":"internal error","status":500}`, 500},
	} {
		t.Run(tc.kind, func(t *testing.T) {
			res, err := http.Post(p.url+"/_internal/test/Fail", "application/json", strings.NewReader(`{"kind":"`+tc.kind+`"}`))
			if err != nil {
				t.Fatal(err)
			}
			defer res.Body.Close() //nolint:errcheck // test
			b, _ := io.ReadAll(res.Body)
			if res.StatusCode != tc.status || res.Header.Get(inthttp.HeaderError) != tc.header || string(b) != tc.body {
				t.Fatalf("got %d %q %s", res.StatusCode, res.Header.Get(inthttp.HeaderError), b)
			}
		})
	}
}
