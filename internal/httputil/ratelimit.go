package httputil

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/matrix-org/dendrite/internal/matrixerr"
)

// RateLimiter is a token bucket per key (user, or IP for unauthenticated requests).
type RateLimiter struct {
	rate   float64
	burst  float64
	exempt map[string]bool

	mu      sync.Mutex
	buckets map[string]*bucket
	swept   time.Time
}

type bucket struct {
	tokens float64
	last   time.Time
}

// NewRateLimiter allows perSecond requests per key with bursts of burst.
func NewRateLimiter(perSecond float64, burst int, exempt []string) *RateLimiter {
	l := &RateLimiter{rate: perSecond, burst: float64(max(burst, 1)), exempt: map[string]bool{}, buckets: map[string]*bucket{}, swept: time.Now()}
	for _, e := range exempt {
		l.exempt[e] = true
	}
	return l
}

// Allow takes a token for key or returns M_LIMIT_EXCEEDED with the wait.
func (l *RateLimiter) Allow(key string) error {
	if l == nil || l.exempt[key] {
		return nil
	}
	now := time.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	if now.Sub(l.swept) > time.Minute {
		// Forget buckets that have refilled: they hold no information.
		for k, b := range l.buckets {
			if b.tokens+now.Sub(b.last).Seconds()*l.rate >= l.burst {
				delete(l.buckets, k)
			}
		}
		l.swept = now
	}
	b, ok := l.buckets[key]
	if !ok {
		b = &bucket{tokens: l.burst, last: now}
		l.buckets[key] = b
	}
	b.tokens = min(l.burst, b.tokens+now.Sub(b.last).Seconds()*l.rate)
	b.last = now
	if b.tokens < 1 {
		wait := time.Duration((1 - b.tokens) / l.rate * float64(time.Second))
		return matrixerr.LimitExceeded(wait)
	}
	b.tokens--
	return nil
}

// rateCheck lets Authenticated charge the user instead of the IP.
type rateCheck struct {
	l *RateLimiter
}

// rateExempt is an identity the limits skip (an application service with rate_limited: false).
type rateExempt interface {
	RateLimitExempt() bool
}

func (c *rateCheck) check(who any) error {
	if e, ok := who.(rateExempt); ok && e.RateLimitExempt() {
		return nil
	}
	if s, ok := who.(fmt.Stringer); ok {
		return c.l.Allow(s.String())
	}
	return nil
}

// RateLimited charges authenticated requests to their user (through Authenticated) and
// others to their IP.
func (s *Server) RateLimited(h HandlerFunc) HandlerFunc {
	return func(r *http.Request) (Response, error) {
		if _, err := AccessToken(r); err != nil {
			if err := s.RateLimiter.Allow(remoteIP(r)); err != nil {
				return Response{}, err
			}
			return h(r)
		}
		r = r.WithContext(context.WithValue(r.Context(), rateKey, &rateCheck{l: s.RateLimiter}))
		return h(r)
	}
}
