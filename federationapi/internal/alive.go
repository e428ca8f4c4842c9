package internal

import (
	"context"
	"sync"
	"time"

	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/sirupsen/logrus"

	fsapi "github.com/matrix-org/dendrite/federationsender/api"
)

// aliveInterval is how often at most a server that keeps sending us requests is reported
// alive.
const aliveInterval = time.Minute

// Alive tells the federationsender that servers which just sent us an authenticated request
// are up, so that a queue backing off or blacklisted for them is sent at once. Reports run in
// the background, at most one per server per minute.
type Alive struct {
	Sender fsapi.SenderAPI
	Logger *logrus.Entry

	mu   sync.Mutex
	last map[spec.ServerName]time.Time
}

// Seen reports origin alive unless it was reported within aliveInterval.
func (a *Alive) Seen(origin spec.ServerName) {
	if a == nil || a.Sender == nil {
		return
	}
	now := time.Now()
	a.mu.Lock()
	if a.last == nil {
		a.last = map[spec.ServerName]time.Time{}
	}
	if now.Sub(a.last[origin]) < aliveInterval {
		a.mu.Unlock()
		return
	}
	a.last[origin] = now
	a.mu.Unlock()
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if _, err := a.Sender.PerformServerAlive(ctx, &fsapi.PerformServerAliveRequest{ServerName: string(origin)}); err != nil {
			a.Logger.WithError(err).WithField("origin", origin).Warn("telling the federation sender a server is up failed")
			a.mu.Lock()
			delete(a.last, origin)
			a.mu.Unlock()
		}
	}()
}
