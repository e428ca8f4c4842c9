package internal

import (
	"context"
	"sync"
	"time"

	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/sirupsen/logrus"

	fsapi "github.com/matrix-org/dendrite/federationsender/api"
)

// aliveInterval is how often one origin is reported alive at most.
const aliveInterval = 10 * time.Second

// Alive tells the federationsender that a server sent us a verified request, so that a
// server coming back gets its queue at once instead of after its backoff. Each origin is
// reported at most every aliveInterval; reports run in the background and never delay or
// fail the request.
type Alive struct {
	Sender fsapi.SenderAPI
	Logger *logrus.Entry
	// Now is the clock (time.Now when nil).
	Now func() time.Time

	mu   sync.Mutex
	last map[spec.ServerName]time.Time
	busy sync.WaitGroup
}

// Seen reports origin alive unless it was reported recently. Nil-safe: without a sender it
// does nothing.
func (a *Alive) Seen(origin spec.ServerName) {
	if a == nil || a.Sender == nil {
		return
	}
	now := time.Now()
	if a.Now != nil {
		now = a.Now()
	}
	a.mu.Lock()
	if a.last == nil {
		a.last = map[spec.ServerName]time.Time{}
	}
	if t, ok := a.last[origin]; ok && now.Sub(t) < aliveInterval {
		a.mu.Unlock()
		return
	}
	if len(a.last) > 10000 {
		clear(a.last)
	}
	a.last[origin] = now
	a.mu.Unlock()
	a.busy.Add(1)
	go func() {
		defer a.busy.Done()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if _, err := a.Sender.PerformServerAlive(ctx, &fsapi.PerformServerAliveRequest{ServerName: string(origin)}); err != nil {
			a.Logger.WithError(err).WithField("origin", origin).Debug("reporting a server alive failed")
		}
	}()
}

// Wait waits for the reports in flight (tests, shutdown).
func (a *Alive) Wait() {
	if a != nil {
		a.busy.Wait()
	}
}
