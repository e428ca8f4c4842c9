// Package internal is the federationapi's logic: our published signing keys, the key ring
// that fetches and caches other servers' keys (directly, then through notaries), and the
// notary that serves other servers' keys.
package internal

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/sirupsen/logrus"

	"github.com/matrix-org/dendrite/federationapi/api"
	"github.com/matrix-org/dendrite/federationapi/storage"
)

// fetchTimeout bounds one server's key fetch.
const fetchTimeout = 15 * time.Second

// Keys is our signing identity and the key ring for other servers' keys.
type Keys struct {
	ServerName spec.ServerName
	KeyID      gomatrixserverlib.KeyID
	PrivateKey ed25519.PrivateKey
	// OldVerifyKeys are our retired keys, published in old_verify_keys.
	OldVerifyKeys map[gomatrixserverlib.KeyID]gomatrixserverlib.OldVerifyKey
	// ValidityPeriod is how long our key response is valid.
	ValidityPeriod time.Duration
	DB             storage.Database
	// Client fetches keys over federation.
	Client gomatrixserverlib.KeyClient
	// Notaries are asked when a server does not answer itself, in order.
	Notaries []gomatrixserverlib.KeyFetcher
	Logger   *logrus.Entry
	Metrics  *Metrics
	// Now is the clock (time.Now when nil).
	Now func() time.Time
}

var _ api.KeyAPI = (*Keys)(nil)

func (k *Keys) now() time.Time {
	if k.Now != nil {
		return k.Now()
	}
	return time.Now()
}

// ServerKeys is our signed /_matrix/key/v2/server response, valid for ValidityPeriod.
func (k *Keys) ServerKeys() ([]byte, error) {
	var f gomatrixserverlib.ServerKeyFields
	f.ServerName = k.ServerName
	f.ValidUntilTS = spec.AsTimestamp(k.now().Add(k.ValidityPeriod))
	f.VerifyKeys = map[gomatrixserverlib.KeyID]gomatrixserverlib.VerifyKey{
		k.KeyID: {Key: spec.Base64Bytes(k.PrivateKey.Public().(ed25519.PublicKey))},
	}
	f.OldVerifyKeys = k.OldVerifyKeys
	if f.OldVerifyKeys == nil {
		f.OldVerifyKeys = map[gomatrixserverlib.KeyID]gomatrixserverlib.OldVerifyKey{}
	}
	b, err := json.Marshal(f)
	if err != nil {
		return nil, err
	}
	return gomatrixserverlib.SignJSON(string(k.ServerName), k.KeyID, k.PrivateKey, b)
}

// Ring is the key ring that verifies other servers' signatures: its lookups are
// QueryPublicKeys (the cache, then the servers themselves, then the notaries; what is
// fetched is cached), the same path other components take through api.KeyRing.
func (k *Keys) Ring() gomatrixserverlib.JSONVerifier {
	return api.KeyRing(k)
}

func (k *Keys) fetchers() []gomatrixserverlib.KeyFetcher {
	return append([]gomatrixserverlib.KeyFetcher{directFetcher{k}}, k.Notaries...)
}

// QueryPublicKeys implements api.KeyAPI.
func (k *Keys) QueryPublicKeys(ctx context.Context, req *api.QueryPublicKeysRequest) (*api.QueryPublicKeysResponse, error) {
	results, err := k.DB.FetchKeys(ctx, req.Requests)
	if err != nil {
		return nil, err
	}
	now := spec.AsTimestamp(k.now())
	wanted := map[gomatrixserverlib.PublicKeyLookupRequest]spec.Timestamp{}
	for r, ts := range req.Requests {
		if res, ok := results[r]; !ok || (res.ExpiredTS == gomatrixserverlib.PublicKeyNotExpired && res.ValidUntilTS <= now) {
			wanted[r] = ts
		}
	}
	for _, f := range k.fetchers() {
		if len(wanted) == 0 {
			break
		}
		fetched, err := f.FetchKeys(ctx, wanted)
		if err != nil {
			k.Logger.WithError(err).WithField("fetcher", f.FetcherName()).Warn("key fetch failed")
			continue
		}
		if err = k.DB.StoreKeys(ctx, fetched); err != nil {
			return nil, err
		}
		for r, res := range fetched {
			if _, asked := req.Requests[r]; asked {
				results[r] = res
				delete(wanted, r)
			}
		}
	}
	return &api.QueryPublicKeysResponse{Results: results}, nil
}

// localKeys are our own keys as lookup results.
func (k *Keys) localKeys() map[gomatrixserverlib.PublicKeyLookupRequest]gomatrixserverlib.PublicKeyLookupResult {
	out := map[gomatrixserverlib.PublicKeyLookupRequest]gomatrixserverlib.PublicKeyLookupResult{
		{ServerName: k.ServerName, KeyID: k.KeyID}: {
			VerifyKey:    gomatrixserverlib.VerifyKey{Key: spec.Base64Bytes(k.PrivateKey.Public().(ed25519.PublicKey))},
			ValidUntilTS: spec.AsTimestamp(k.now().Add(k.ValidityPeriod)),
		},
	}
	for id, old := range k.OldVerifyKeys {
		out[gomatrixserverlib.PublicKeyLookupRequest{ServerName: k.ServerName, KeyID: id}] = gomatrixserverlib.PublicKeyLookupResult{
			VerifyKey: old.VerifyKey, ExpiredTS: old.ExpiredTS,
		}
	}
	return out
}

// fetchDirect asks serverName for its keys, checks the answer (server name, self
// signatures) and caches the signed response for the notary. A response whose
// valid_until_ts has passed is kept: its keys still verify what was signed before then,
// and a notary serves the latest response it has even when expired (keys_query.yaml).
func (k *Keys) fetchDirect(ctx context.Context, serverName spec.ServerName) (gomatrixserverlib.ServerKeys, error) {
	ctx, cancel := context.WithTimeout(ctx, fetchTimeout)
	defer cancel()
	keys, err := k.Client.GetServerKeys(ctx, serverName)
	if err != nil {
		k.Metrics.keyFetch("direct", "error")
		return keys, fmt.Errorf("fetch keys of %s: %w", serverName, err)
	}
	now := k.now()
	if checks, _ := gomatrixserverlib.CheckKeys(serverName, now, keys); !checks.MatchingServerName ||
		!checks.HasEd25519Key || checks.AllEd25519ChecksOK == nil || !*checks.AllEd25519ChecksOK {
		k.Metrics.keyFetch("direct", "invalid")
		return keys, fmt.Errorf("keys of %s failed the checks: %+v", serverName, checks)
	}
	k.Metrics.keyFetch("direct", "ok")
	r := &storage.KeyResponse{ServerName: serverName, Raw: keys.Raw, ValidUntilTS: keys.ValidUntilTS, FetchedTS: spec.AsTimestamp(now)}
	for id := range keys.VerifyKeys {
		r.KeyIDs = append(r.KeyIDs, id)
	}
	for id := range keys.OldVerifyKeys {
		r.KeyIDs = append(r.KeyIDs, id)
	}
	if err = k.DB.StoreKeyResponse(ctx, r); err != nil {
		return keys, err
	}
	return keys, nil
}

// directFetcher is the KeyFetcher that asks each server itself (our own keys need no
// request).
type directFetcher struct {
	k *Keys
}

func (d directFetcher) FetcherName() string {
	return "direct"
}

// maxParallelFetches bounds the servers asked at once.
const maxParallelFetches = 8

func (d directFetcher) FetchKeys(ctx context.Context, requests map[gomatrixserverlib.PublicKeyLookupRequest]spec.Timestamp) (map[gomatrixserverlib.PublicKeyLookupRequest]gomatrixserverlib.PublicKeyLookupResult, error) {
	out := map[gomatrixserverlib.PublicKeyLookupRequest]gomatrixserverlib.PublicKeyLookupResult{}
	servers := map[spec.ServerName]bool{}
	for r := range requests {
		if r.ServerName == d.k.ServerName {
			for lr, res := range d.k.localKeys() {
				out[lr] = res
			}
			continue
		}
		servers[r.ServerName] = true
	}
	var mu sync.Mutex
	var wg sync.WaitGroup
	sem := make(chan struct{}, maxParallelFetches)
	var errs []error
	for server := range servers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			keys, err := d.k.fetchDirect(ctx, server)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, err)
				return
			}
			addResults(out, keys)
		}()
	}
	wg.Wait()
	if len(out) == 0 && len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	for _, err := range errs {
		d.k.Logger.WithError(err).Debug("direct key fetch failed")
	}
	return out, nil
}

// addResults adds a server's checked key response to out: current keys valid until the
// response's valid_until_ts, old keys with their expiry.
func addResults(out map[gomatrixserverlib.PublicKeyLookupRequest]gomatrixserverlib.PublicKeyLookupResult, keys gomatrixserverlib.ServerKeys) {
	for id, key := range keys.VerifyKeys {
		out[gomatrixserverlib.PublicKeyLookupRequest{ServerName: keys.ServerName, KeyID: id}] = gomatrixserverlib.PublicKeyLookupResult{
			VerifyKey: key, ValidUntilTS: keys.ValidUntilTS, ExpiredTS: gomatrixserverlib.PublicKeyNotExpired,
		}
	}
	for id, key := range keys.OldVerifyKeys {
		out[gomatrixserverlib.PublicKeyLookupRequest{ServerName: keys.ServerName, KeyID: id}] = gomatrixserverlib.PublicKeyLookupResult{
			VerifyKey: key.VerifyKey, ValidUntilTS: gomatrixserverlib.PublicKeyNotValid, ExpiredTS: key.ExpiredTS,
		}
	}
}

// NotaryQuery answers /_matrix/key/v2/query: for each server, its own signed key responses
// that publish the requested key IDs (all its keys when none is named), with our signature
// added. A response is served from the cache while it is valid until the requested time and
// in the first half of its lifetime (keys_server.yaml); otherwise the server is asked again,
// and when it cannot answer, or no longer publishes a key, the last response we have for
// that key is served, even when expired. Servers we know nothing about are left out.
func (k *Keys) NotaryQuery(ctx context.Context, criteria map[spec.ServerName]map[gomatrixserverlib.KeyID]gomatrixserverlib.PublicKeyNotaryQueryCriteria) ([]json.RawMessage, error) {
	out := []json.RawMessage{}
	for server, keyCriteria := range criteria {
		if server == k.ServerName {
			raw, err := k.ServerKeys()
			if err != nil {
				return nil, err
			}
			out = append(out, raw)
			continue
		}
		// Without minimum_valid_until_ts the notary uses the current time (keys_query.yaml).
		var minValid spec.Timestamp
		var keyIDs []gomatrixserverlib.KeyID
		for id, c := range keyCriteria {
			minValid = max(minValid, c.MinimumValidUntilTS)
			if id != "" {
				keyIDs = append(keyIDs, id)
			}
		}
		if minValid == 0 {
			minValid = spec.AsTimestamp(k.now())
		}
		responses, err := k.notaryKeys(ctx, server, keyIDs, minValid)
		if err != nil {
			return nil, err
		}
		for _, r := range responses {
			signed, err := gomatrixserverlib.SignJSON(string(k.ServerName), k.KeyID, k.PrivateKey, r.Raw)
			if err != nil {
				return nil, err
			}
			out = append(out, signed)
		}
	}
	return out, nil
}

// notaryKeys are server's key responses for keyIDs (all when empty) for the notary.
func (k *Keys) notaryKeys(ctx context.Context, server spec.ServerName, keyIDs []gomatrixserverlib.KeyID, minValid spec.Timestamp) ([]storage.KeyResponse, error) {
	cached, err := k.DB.KeyResponses(ctx, server, keyIDs)
	if err != nil {
		return nil, err
	}
	if k.fresh(cached, keyIDs, minValid) {
		return cached, nil
	}
	keys, err := k.fetchDirect(ctx, server)
	if err != nil {
		k.Logger.WithError(err).WithField("server_name", server).Debug("notary could not fetch keys; serving the cache")
		return cached, nil
	}
	results := map[gomatrixserverlib.PublicKeyLookupRequest]gomatrixserverlib.PublicKeyLookupResult{}
	addResults(results, keys)
	if err = k.DB.StoreKeys(ctx, results); err != nil {
		return nil, err
	}
	return k.DB.KeyResponses(ctx, server, keyIDs)
}

// fresh tells whether the cached responses answer every key ID asked for and each is valid
// until minValid and in the first half of its lifetime. A response that had already expired
// when we received it has no such lifetime: it stays usable for requesters that ask for
// keys valid until a time it covers (asking the origin again would only bring the same or a
// newer key). When no key ID is named, only the latest response counts: older ones publish
// keys the server has since dropped.
func (k *Keys) fresh(cached []storage.KeyResponse, keyIDs []gomatrixserverlib.KeyID, minValid spec.Timestamp) bool {
	if len(cached) == 0 {
		return false
	}
	if len(keyIDs) == 0 {
		latest := cached[0]
		for _, r := range cached[1:] {
			if r.FetchedTS > latest.FetchedTS {
				latest = r
			}
		}
		cached = []storage.KeyResponse{latest}
	}
	answered := 0
	now := spec.AsTimestamp(k.now())
	for _, r := range cached {
		if r.ValidUntilTS < minValid || (r.ValidUntilTS > r.FetchedTS && now >= r.FetchedTS+(r.ValidUntilTS-r.FetchedTS)/2) {
			return false
		}
		answered += len(r.KeyIDs)
	}
	return answered >= len(keyIDs)
}

// Metrics are the federationapi's counters; nil records nothing.
type Metrics struct {
	keyFetches *prometheus.CounterVec
	auth       *prometheus.CounterVec
}

// NewMetrics registers the metrics on reg (nothing is registered when reg is nil).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		keyFetches: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dendrite_federationapi_key_fetches_total", Help: "Fetches of other servers' signing keys, by source and outcome.",
		}, []string{"source", "outcome"}),
		auth: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dendrite_federationapi_request_auth_total", Help: "X-Matrix authentication of inbound federation requests, by outcome.",
		}, []string{"outcome"}),
	}
	if reg != nil {
		reg.MustRegister(m.keyFetches, m.auth)
	}
	return m
}

func (m *Metrics) keyFetch(source, outcome string) {
	if m != nil {
		m.keyFetches.WithLabelValues(source, outcome).Inc()
	}
}

// Auth counts one request authentication outcome (ok, missing, bad_destination, bad_signature, bad_request).
func (m *Metrics) Auth(outcome string) {
	if m != nil {
		m.auth.WithLabelValues(outcome).Inc()
	}
}
