// Package fedclient is Dendrite's outbound federation: gomatrixserverlib's federation client
// (request signing, every federation endpoint) over a transport that finds servers as the
// spec's "Resolving server names" says (IP literals, explicit ports, .well-known/matrix/server,
// SRV records, port 8448), caches what it found and verifies the remote TLS certificate
// unless told not to. federationapi and federationsender both make their client here.
//
// The resolution is ours rather than fclient's because fclient fetches .well-known with a
// client of its own (so it cannot skip certificate checks for tests), keeps results until a
// request fails (ignoring the cache headers the spec asks us to respect) and has fixed ports
// and DNS, which cannot be tested on loopback.
package fedclient

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/matrix-org/gomatrixserverlib/fclient"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/matrix-org/dendrite/internal/outbound"
)

// Cache lifetimes from the spec: .well-known answers are kept as their cache headers say,
// 24 hours without headers and never more than 48; failures for an hour.
const (
	wellKnownDefaultTTL = 24 * time.Hour
	wellKnownMaxTTL     = 48 * time.Hour
	wellKnownErrorTTL   = time.Hour
	wellKnownMaxBytes   = 50 << 10
	wellKnownTimeout    = 10 * time.Second
)

// Resolver turns server names into where to connect. Its zero value is not usable: make it
// with NewResolver. It is safe for concurrent use.
type Resolver struct {
	// DefaultPort is the federation port when discovery names none (8448).
	DefaultPort int
	// WellKnownPort is the HTTPS port .well-known/matrix/server is fetched from (443).
	WellKnownPort int
	// LookupSRV looks up SRV records (net.DefaultResolver.LookupSRV).
	LookupSRV func(ctx context.Context, service, proto, name string) (string, []*net.SRV, error)
	// WellKnownClient fetches .well-known; it follows redirects (at most 10).
	WellKnownClient *http.Client
	// Now is the clock (time.Now).
	Now func() time.Time

	mu    sync.Mutex
	cache map[spec.ServerName]cached
}

type cached struct {
	results []fclient.ResolutionResult
	expires time.Time
}

// NewResolver is a resolver with the spec's ports and the system's DNS; skipVerify disables
// certificate checks when fetching .well-known (tests and local development only); deny
// (nil: none) are the networks .well-known is never fetched from, redirects included.
func NewResolver(skipVerify bool, deny *outbound.Policy) *Resolver {
	return &Resolver{
		DefaultPort: 8448, WellKnownPort: 443, LookupSRV: net.DefaultResolver.LookupSRV,
		WellKnownClient: &http.Client{Timeout: wellKnownTimeout, Transport: newHTTPTransport("", skipVerify, deny)},
		Now:             time.Now, cache: map[spec.ServerName]cached{},
	}
}

// Resolve returns where to send requests for serverName, in order of preference. Results
// that needed a network lookup are cached; Forget drops them.
func (r *Resolver) Resolve(ctx context.Context, serverName spec.ServerName) ([]fclient.ResolutionResult, error) {
	host, port, ok := spec.ParseAndValidateServerName(serverName)
	if !ok {
		return nil, fmt.Errorf("invalid server name %q", serverName)
	}
	// Steps 1 and 2: an IP literal or an explicit port needs no lookup.
	if res, ok := r.direct(serverName, host, port); ok {
		return res, nil
	}
	r.mu.Lock()
	c, hit := r.cache[serverName]
	r.mu.Unlock()
	if hit && r.Now().Before(c.expires) {
		return c.results, nil
	}
	results, ttl := r.discover(ctx, serverName, host)
	r.mu.Lock()
	r.cache[serverName] = cached{results: results, expires: r.Now().Add(ttl)}
	r.mu.Unlock()
	return results, nil
}

// Forget drops the cached resolution of serverName (after no destination answered).
func (r *Resolver) Forget(serverName spec.ServerName) {
	r.mu.Lock()
	delete(r.cache, serverName)
	r.mu.Unlock()
}

// direct handles IP literals and explicit ports (steps 1 and 2, and 3.1 and 3.2 for a
// delegated name).
func (r *Resolver) direct(name spec.ServerName, host string, port int) ([]fclient.ResolutionResult, bool) {
	ip := strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	if net.ParseIP(ip) != nil {
		if port < 0 {
			port = r.DefaultPort
		}
		return []fclient.ResolutionResult{{Destination: net.JoinHostPort(ip, strconv.Itoa(port)), Host: name, TLSServerName: ip}}, true
	}
	if port >= 0 {
		return []fclient.ResolutionResult{{Destination: net.JoinHostPort(host, strconv.Itoa(port)), Host: name, TLSServerName: host}}, true
	}
	return nil, false
}

// discover runs steps 3 to 6 for a hostname without a port and says how long to keep the
// answer.
func (r *Resolver) discover(ctx context.Context, name spec.ServerName, host string) ([]fclient.ResolutionResult, time.Duration) {
	delegated, ttl, err := r.wellKnown(ctx, host)
	if err != nil {
		return r.srvOrDefault(ctx, name, host), wellKnownErrorTTL
	}
	dHost, dPort, _ := spec.ParseAndValidateServerName(delegated) // validated by wellKnown
	if res, ok := r.direct(delegated, dHost, dPort); ok {
		return res, ttl
	}
	return r.srvOrDefault(ctx, delegated, dHost), ttl
}

// srvOrDefault is SRV _matrix-fed._tcp, then the deprecated _matrix._tcp, then port 8448,
// always with the name as Host header and certificate name.
func (r *Resolver) srvOrDefault(ctx context.Context, name spec.ServerName, host string) []fclient.ResolutionResult {
	for _, service := range []string{"matrix-fed", "matrix"} {
		_, records, err := r.LookupSRV(ctx, service, "tcp", host)
		if err != nil || len(records) == 0 {
			continue
		}
		var out []fclient.ResolutionResult
		for _, rec := range records {
			target := strings.TrimSuffix(rec.Target, ".")
			out = append(out, fclient.ResolutionResult{
				Destination: net.JoinHostPort(target, strconv.Itoa(int(rec.Port))), Host: name, TLSServerName: host,
			})
		}
		return out
	}
	return []fclient.ResolutionResult{{Destination: net.JoinHostPort(host, strconv.Itoa(r.DefaultPort)), Host: name, TLSServerName: host}}
}

var errNoWellKnown = errors.New("no usable .well-known/matrix/server")

// wellKnown fetches https://host/.well-known/matrix/server and returns the delegated server
// name and how long to cache it.
func (r *Resolver) wellKnown(ctx context.Context, host string) (spec.ServerName, time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, wellKnownTimeout)
	defer cancel()
	authority := host
	if r.WellKnownPort != 443 {
		authority = net.JoinHostPort(host, strconv.Itoa(r.WellKnownPort))
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+authority+"/.well-known/matrix/server", nil)
	if err != nil {
		return "", 0, err
	}
	res, err := r.WellKnownClient.Do(req)
	if err != nil {
		return "", 0, err
	}
	defer res.Body.Close() // nolint: errcheck // read-only body
	if res.StatusCode != http.StatusOK {
		return "", 0, errNoWellKnown
	}
	body, err := io.ReadAll(io.LimitReader(res.Body, wellKnownMaxBytes+1))
	if err != nil || len(body) > wellKnownMaxBytes {
		return "", 0, errNoWellKnown
	}
	var wk struct {
		Server spec.ServerName `json:"m.server"`
	}
	if json.Unmarshal(body, &wk) != nil || wk.Server == "" {
		return "", 0, errNoWellKnown
	}
	if _, _, ok := spec.ParseAndValidateServerName(wk.Server); !ok {
		return "", 0, errNoWellKnown
	}
	return wk.Server, cacheTTL(res.Header, r.Now()), nil
}

// cacheTTL reads Cache-Control max-age (preferred) or Expires, clamped to the spec's bounds.
func cacheTTL(h http.Header, now time.Time) time.Duration {
	ttl := wellKnownDefaultTTL
	if exp, err := http.ParseTime(h.Get("Expires")); err == nil {
		ttl = exp.Sub(now)
	}
	for _, d := range strings.Split(h.Get("Cache-Control"), ",") {
		k, v, _ := strings.Cut(strings.TrimSpace(d), "=")
		switch strings.ToLower(k) {
		case "max-age":
			if n, err := strconv.Atoi(v); err == nil {
				ttl = time.Duration(n) * time.Second
			}
		case "no-store", "no-cache":
			ttl = 0
		}
	}
	return min(max(ttl, 0), wellKnownMaxTTL)
}
