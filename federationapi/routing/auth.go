package routing

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"time"

	"github.com/matrix-org/gomatrixserverlib/fclient"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/matrix-org/util"

	"github.com/matrix-org/dendrite/internal/httputil"
	"github.com/matrix-org/dendrite/internal/matrixerr"
)

// FederationHandler is an endpoint that needs an authenticated origin server. req holds
// the verified origin and the request's JSON content.
type FederationHandler func(r *http.Request, req *fclient.FederationRequest) (httputil.Response, error)

// Authenticated checks the X-Matrix Authorization header (spec "Request Authentication")
// before h runs: 401 M_UNAUTHORIZED when it is missing or malformed, names another
// destination, or its signature does not verify with the origin's key (fetched and cached
// by the key ring); 400 M_NOT_JSON for a body that is not JSON; 429 M_LIMIT_EXCEEDED when
// the origin is over its rate limit.
func (rt *Routing) Authenticated(h FederationHandler) httputil.HandlerFunc {
	return func(r *http.Request) (httputil.Response, error) {
		// gomatrixserverlib logs through the context's logger: give it the request's.
		r = r.WithContext(util.ContextWithLogger(r.Context(), httputil.Logger(r)))
		req, err := rt.authenticate(r)
		if err != nil {
			return httputil.Response{}, err
		}
		if err = rt.Limiter.Allow(string(req.Origin())); err != nil {
			return httputil.Response{}, err
		}
		return h(r, req)
	}
}

func (rt *Routing) authenticate(r *http.Request) (*fclient.FederationRequest, error) {
	if outcome, err := rt.checkHeader(r); err != nil {
		rt.Metrics.Auth(outcome)
		return nil, err
	}
	body, err := io.ReadAll(r.Body)
	if err != nil {
		rt.Metrics.Auth("bad_request")
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return nil, matrixerr.TooLarge("the request body is too large")
		}
		return nil, matrixerr.NotJSON("could not read the request body")
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	if len(body) > 0 && r.Header.Get("Content-Type") == "" {
		// The spec lets senders leave the Content-Type out; the body is JSON either way.
		r.Header.Set("Content-Type", "application/json")
	}
	now := time.Now()
	if rt.Now != nil {
		now = rt.Now()
	}
	req, res := fclient.VerifyHTTPRequest(r, now, rt.ServerName, nil, rt.Verifier)
	r.Body = io.NopCloser(bytes.NewReader(body))
	if req != nil {
		rt.Metrics.Auth("ok")
		rt.Alive.Seen(req.Origin())
		return req, nil
	}
	switch res.Code {
	case http.StatusUnauthorized:
		rt.Metrics.Auth("bad_signature")
		return nil, matrixerr.Unauthorized("the request's X-Matrix signature is invalid")
	case http.StatusBadRequest:
		rt.Metrics.Auth("bad_request")
		return nil, matrixerr.NotJSON("the request body is not UTF-8 JSON")
	}
	if err := r.Context().Err(); err != nil {
		return nil, context.Cause(r.Context())
	}
	rt.Metrics.Auth("error")
	return nil, errors.New("verifying the request signature failed (key lookup)")
}

// checkHeader checks the X-Matrix headers' shape, origin and destination before any key is
// fetched, and returns the metric outcome with the error. Requests without a destination
// (servers older than spec v1.3) are accepted as addressed to us.
func (rt *Routing) checkHeader(r *http.Request) (string, error) {
	found := false
	for _, h := range r.Header.Values("Authorization") {
		scheme, origin, destination, key, sig := fclient.ParseAuthorization(h)
		if scheme != "X-Matrix" {
			continue
		}
		found = true
		if origin == "" || key == "" || sig == "" {
			return "missing", matrixerr.Unauthorized("the X-Matrix Authorization header needs origin, key and sig")
		}
		if _, _, ok := spec.ParseAndValidateServerName(origin); !ok {
			// A malformed request rather than a failed authentication (sytest "Non-numeric
			// ports in server names are rejected").
			return "missing", matrixerr.BadAuthorization("the X-Matrix origin is not a valid server name")
		}
		if destination != "" && destination != rt.ServerName {
			return "bad_destination", matrixerr.Unauthorized("the request is addressed to another server")
		}
	}
	if !found {
		return "missing", matrixerr.Unauthorized("missing X-Matrix Authorization header")
	}
	return "", nil
}
