package internal

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sirupsen/logrus"

	"github.com/matrix-org/dendrite/appservice/api"
	"github.com/matrix-org/dendrite/internal/caching"
	"github.com/matrix-org/dendrite/internal/config"
	"github.com/matrix-org/dendrite/internal/matrixerr"
)

// protocolCacheTTL is how long a service's protocol metadata is reused: clients ask for it
// often, and it changes with the service's deployment.
const protocolCacheTTL = 5 * time.Minute

// missTTL is how long a service's "no such user" or "no such alias" answer is believed:
// clients and other servers ask again and again about users and aliases that do not exist
// (an invite retried, a mistyped alias), and each question would be a request to the
// service. A user or alias the service creates meanwhile exists on the homeserver and is
// not asked about.
const missTTL = time.Minute

// missCacheBytes bounds the cache of misses.
const missCacheBytes = 1 << 20

// Queries implements api.QueryAPI: the homeserver's questions to the services.
type Queries struct {
	Client   *Client
	Services []*config.ApplicationService
	Logger   *logrus.Entry

	// misses holds, by service ID, kind and user ID or alias, until when the service's
	// 404 answer is believed.
	misses    *caching.Cache[missKey, time.Time]
	mu        sync.Mutex
	protocols map[[2]string]cachedProtocol // (service ID, protocol) -> metadata
}

type cachedProtocol struct {
	meta    map[string]json.RawMessage
	fetched time.Time
}

var _ api.QueryAPI = (*Queries)(nil)

type missKey struct {
	serviceID, kind, id string
}

// NewQueries builds the queries to services; reg (may be nil) gets the metrics of the cache
// of misses.
func NewQueries(client *Client, services []*config.ApplicationService, logger *logrus.Entry, reg prometheus.Registerer) *Queries {
	weigh := func(k missKey, _ time.Time) int { return len(k.serviceID) + len(k.kind) + len(k.id) + 72 }
	return &Queries{Client: client, Services: services, Logger: logger,
		misses: caching.New("appservice_query_misses", missCacheBytes, weigh, reg)}
}

// QueryUserIDExists asks each service whose users namespace has the user, in registration
// order, until one answers with success.
func (q *Queries) QueryUserIDExists(ctx context.Context, req *api.QueryUserIDExistsRequest) (*api.QueryUserIDExistsResponse, error) {
	for _, as := range q.Services {
		if as.URL == "" || !as.OwnsUserID(req.UserID) || req.UserID == as.SenderUserID() {
			continue
		}
		if q.ask(ctx, as, missKey{as.ID, "user", req.UserID}, "/_matrix/app/v1/users/"+url.PathEscape(req.UserID)) {
			return &api.QueryUserIDExistsResponse{Exists: true}, nil
		}
	}
	return &api.QueryUserIDExistsResponse{}, nil
}

// QueryRoomAliasExists asks each service whose aliases namespace has the alias, in
// registration order, until one answers with success.
func (q *Queries) QueryRoomAliasExists(ctx context.Context, req *api.QueryRoomAliasExistsRequest) (*api.QueryRoomAliasExistsResponse, error) {
	for _, as := range q.Services {
		if as.URL == "" || !as.OwnsAlias(req.Alias) {
			continue
		}
		if q.ask(ctx, as, missKey{as.ID, "alias", req.Alias}, "/_matrix/app/v1/rooms/"+url.PathEscape(req.Alias)) {
			return &api.QueryRoomAliasExistsResponse{Exists: true}, nil
		}
	}
	return &api.QueryRoomAliasExistsResponse{}, nil
}

// ask GETs path from the service: true on a 2xx answer. A 404 answer is remembered under
// key for missTTL, during which the service is not asked again. A failure is logged (and
// not remembered: the service may be back soon): the client's request goes on as if the
// service did not know the user or alias.
func (q *Queries) ask(ctx context.Context, as *config.ApplicationService, key missKey, path string) bool {
	if until, ok := q.misses.Get(key); ok && time.Now().Before(until) {
		return false
	}
	err := q.Client.do(ctx, as, http.MethodGet, path, nil, nil, nil)
	var se *StatusError
	switch {
	case err == nil:
		q.misses.Delete(key)
	case errors.As(err, &se) && se.Status == http.StatusNotFound:
		q.misses.Put(key, time.Now().Add(missTTL))
	default:
		q.Logger.WithError(err).WithField("appservice_id", as.ID).Warn("application service query failed")
	}
	return err == nil
}

// QueryThirdParty answers a third-party lookup from the services providing the protocol
// (for a lookup without protocol, every service with a URL that provides one).
func (q *Queries) QueryThirdParty(ctx context.Context, req *api.QueryThirdPartyRequest) (*api.QueryThirdPartyResponse, error) {
	if req.Kind == api.ThirdPartyProtocol {
		meta, found := q.protocol(ctx, req.Protocol)
		if !found {
			return &api.QueryThirdPartyResponse{}, nil
		}
		b, err := json.Marshal(meta)
		if err != nil {
			return nil, err
		}
		return &api.QueryThirdPartyResponse{Found: true, Result: b}, nil
	}
	if req.Kind != api.ThirdPartyLocation && req.Kind != api.ThirdPartyUser {
		return nil, matrixerr.InvalidParam("unknown third-party lookup")
	}
	path := "/_matrix/app/v1/thirdparty/" + req.Kind
	if req.Protocol != "" {
		path += "/" + url.PathEscape(req.Protocol)
	}
	results := []json.RawMessage{}
	found := false
	for _, as := range q.Services {
		if as.URL == "" || len(as.Protocols) == 0 || (req.Protocol != "" && !as.HasProtocol(req.Protocol)) {
			continue
		}
		found = true
		var list []json.RawMessage
		if err := q.Client.do(ctx, as, http.MethodGet, path, url.Values(req.Query), nil, &list); err != nil {
			q.Logger.WithError(err).WithField("appservice_id", as.ID).Warn("application service third-party lookup failed")
			continue
		}
		results = append(results, list...)
	}
	b, err := json.Marshal(results)
	if err != nil {
		return nil, err
	}
	return &api.QueryThirdPartyResponse{Found: found, Result: b}, nil
}

// QueryProtocols is the metadata of every protocol some service provides and answers for.
func (q *Queries) QueryProtocols(ctx context.Context, _ *api.QueryProtocolsRequest) (*api.QueryProtocolsResponse, error) {
	out := map[string]json.RawMessage{}
	for _, as := range q.Services {
		for _, p := range as.Protocols {
			if _, done := out[p]; done {
				continue
			}
			if meta, found := q.protocol(ctx, p); found {
				b, err := json.Marshal(meta)
				if err != nil {
					return nil, err
				}
				out[p] = b
			}
		}
	}
	return &api.QueryProtocolsResponse{Protocols: out}, nil
}

// protocol is the protocol's metadata: the first answering service's, with the instances
// of every service providing it, each instance with a network_id given an instance_id
// naming the service.
func (q *Queries) protocol(ctx context.Context, protocol string) (map[string]json.RawMessage, bool) {
	var merged map[string]json.RawMessage
	instances := []map[string]json.RawMessage{}
	for _, as := range q.Services {
		if as.URL == "" || !as.HasProtocol(protocol) {
			continue
		}
		meta := q.serviceProtocol(ctx, as, protocol)
		if meta == nil {
			continue
		}
		if merged == nil {
			merged = map[string]json.RawMessage{}
			for k, v := range meta {
				merged[k] = v
			}
		}
		var list []map[string]json.RawMessage
		if json.Unmarshal(meta["instances"], &list) == nil {
			for _, inst := range list {
				var network string
				if json.Unmarshal(inst["network_id"], &network) == nil && network != "" {
					id, _ := json.Marshal(as.ID + "|" + network) // a string always encodes
					inst["instance_id"] = id
				}
				instances = append(instances, inst)
			}
		}
	}
	if merged == nil {
		return nil, false
	}
	b, err := json.Marshal(instances)
	if err != nil {
		return nil, false
	}
	merged["instances"] = b
	return merged, true
}

// serviceProtocol is one service's metadata for the protocol, from the cache while fresh;
// nil when the service does not answer with an object.
func (q *Queries) serviceProtocol(ctx context.Context, as *config.ApplicationService, protocol string) map[string]json.RawMessage {
	key := [2]string{as.ID, protocol}
	q.mu.Lock()
	c, ok := q.protocols[key]
	q.mu.Unlock()
	if ok && time.Since(c.fetched) < protocolCacheTTL {
		return c.meta
	}
	var meta map[string]json.RawMessage
	if err := q.Client.do(ctx, as, http.MethodGet, "/_matrix/app/v1/thirdparty/protocol/"+url.PathEscape(protocol), nil, nil, &meta); err != nil || meta == nil {
		if err != nil {
			q.Logger.WithError(err).WithField("appservice_id", as.ID).Warn("application service protocol lookup failed")
		}
		return nil
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.protocols == nil {
		q.protocols = map[[2]string]cachedProtocol{}
	}
	q.protocols[key] = cachedProtocol{meta: meta, fetched: time.Now()}
	return meta
}

// PerformPing posts to the service's /_matrix/app/v1/ping and times the answer.
func (q *Queries) PerformPing(ctx context.Context, req *api.PerformPingRequest) (*api.PerformPingResponse, error) {
	var as *config.ApplicationService
	for _, s := range q.Services {
		if s.ID == req.ServiceID {
			as = s
		}
	}
	if as == nil {
		return nil, matrixerr.Forbidden("not an application service")
	}
	if as.URL == "" {
		return nil, matrixerr.URLNotSet("the application service has no url")
	}
	body := map[string]string{}
	if req.TransactionID != "" {
		body["transaction_id"] = req.TransactionID
	}
	start := time.Now()
	err := q.Client.do(ctx, as, http.MethodPost, "/_matrix/app/v1/ping", nil, body, nil)
	var se *StatusError
	switch {
	case err == nil:
		return &api.PerformPingResponse{DurationMS: time.Since(start).Milliseconds()}, nil
	case errors.As(err, &se):
		return nil, matrixerr.BadStatus("the application service answered " + http.StatusText(se.Status))
	case errors.Is(err, context.DeadlineExceeded):
		return nil, matrixerr.ConnectionTimeout("the application service did not answer in time")
	default:
		return nil, matrixerr.ConnectionFailed("the application service could not be reached")
	}
}
