package test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/gorilla/mux"
	"github.com/sirupsen/logrus"

	ihttp "github.com/matrix-org/dendrite/internal/inthttp"
	"github.com/matrix-org/dendrite/internal/matrixerr"
)

// InternalServer serves what register registers (a component's inthttp.Register, given
// the server options) over loopback HTTP until the test ends, and returns its URL.
func InternalServer(t *testing.T, register func(r *mux.Router, opts ihttp.ServerOptions)) string {
	t.Helper()
	router := mux.NewRouter()
	register(router, ihttp.ServerOptions{Logger: logrus.NewEntry(logrus.New())})
	srv := httptest.NewServer(router)
	t.Cleanup(srv.Close)
	return srv.URL
}

// InputTakenOnceRunning checks a writer that waits until the owner of an input topic took
// what it produced (eventlog.AwaitTaken): input produces once, its wait bounded by
// timeout. While the owner does not run, input with a timeout of 300ms answers 504
// M_UNKNOWN; then the owner runs (run, until the test ends, when it must return nil) and
// the client's retry, with a timeout of 30s, is acknowledged.
func InputTakenOnceRunning(ctx context.Context, t *testing.T, run func(ctx context.Context) error, input func(timeout time.Duration) error) {
	t.Helper()
	var merr *matrixerr.Error
	if err := input(300 * time.Millisecond); !errors.As(err, &merr) || merr.Status != http.StatusGatewayTimeout || merr.Code != "M_UNKNOWN" {
		t.Fatalf("an input its owner cannot take yet: %v, want 504 M_UNKNOWN", err)
	}
	running, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- run(running) }()
	t.Cleanup(func() {
		stop()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	if err := input(30 * time.Second); err != nil {
		t.Fatalf("the retry once the owner runs: %v", err)
	}
}
