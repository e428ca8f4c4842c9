package fedclient

import (
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"sync"
	"time"

	"github.com/matrix-org/gomatrix"
	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/fclient"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/sirupsen/logrus"

	"github.com/matrix-org/dendrite/internal/outbound"
)

// Options configure the outbound federation client.
type Options struct {
	ServerName spec.ServerName
	KeyID      gomatrixserverlib.KeyID
	PrivateKey ed25519.PrivateKey
	// SkipVerify accepts any TLS certificate from remote servers: for tests and local
	// development only (federation_api.disable_tls_validation). New logs a warning.
	SkipVerify bool
	// Deny are the networks no connection may reach (global.deny_networks), checked on
	// every connection, .well-known and its redirects included; nil denies nothing.
	Deny *outbound.Policy
	// Timeout bounds every request (30s when 0).
	Timeout time.Duration
	// Resolver finds servers; nil makes one with the spec's defaults.
	Resolver *Resolver
	Logger   *logrus.Entry
}

// Client is gomatrixserverlib's federation client (every federation endpoint, requests
// signed as our server) plus the unsigned requests it leaves out.
type Client struct {
	fclient.FederationClient
	plain     *fclient.Client
	identity  *fclient.SigningIdentity
	transport *Transport
}

// GetVersion asks a server for its implementation name and version (unsigned).
func (c *Client) GetVersion(ctx context.Context, s spec.ServerName) (fclient.Version, error) {
	return c.plain.GetVersion(ctx, s)
}

// SendInviteV2 sends an invite through PUT /_matrix/federation/v2/invite and falls back to
// the v1 API only when the remote server does not have the v2 endpoint (404
// M_UNRECOGNIZED). gomatrixserverlib's client falls back on any 404, so that an unknown
// invitee's 404 M_NOT_FOUND became the answer of a v1 invite, which is only meant for
// rooms of versions 1 and 2.
func (c *Client) SendInviteV2(ctx context.Context, origin, s spec.ServerName, request fclient.InviteV2Request) (fclient.RespInviteV2, error) {
	var res fclient.RespInviteV2
	ev := request.Event()
	path := "/invite/" + url.PathEscape(ev.RoomID().String()) + "/" + url.PathEscape(ev.EventID())
	err := c.signedRequest(ctx, origin, s, "/_matrix/federation/v2"+path, request, &res)
	var herr gomatrix.HTTPError
	if !errors.As(err, &herr) || herr.Code != http.StatusNotFound {
		return res, err
	}
	var body struct {
		ErrCode string `json:"errcode"`
	}
	if json.Unmarshal(herr.Contents, &body) == nil && body.ErrCode != "M_UNRECOGNIZED" {
		return res, err
	}
	var v1 fclient.RespInvite
	err = c.signedRequest(ctx, origin, s, "/_matrix/federation/v1"+path, json.RawMessage(ev.JSON()), &v1)
	return fclient.RespInviteV2{Event: v1.Event}, err
}

// signedRequest PUTs content to path on server s, signed as origin, and decodes the answer.
func (c *Client) signedRequest(ctx context.Context, origin, s spec.ServerName, path string, content, out any) error {
	fr := fclient.NewFederationRequest(http.MethodPut, origin, s, path)
	if err := fr.SetContent(content); err != nil {
		return err
	}
	if err := fr.Sign(c.identity.ServerName, c.identity.KeyID, c.identity.PrivateKey); err != nil {
		return err
	}
	req, err := fr.HTTPRequest()
	if err != nil {
		return err
	}
	return c.DoRequestAndParseResponse(ctx, req, out)
}

// UserDevices asks server s for one of its users' device list (GET
// /_matrix/federation/v1/user/devices/{userId}), signed as origin, and decodes the answer
// into out as the server sent it.
func (c *Client) UserDevices(ctx context.Context, origin, s spec.ServerName, userID string, out any) error {
	fr := fclient.NewFederationRequest(http.MethodGet, origin, s, "/_matrix/federation/v1/user/devices/"+url.PathEscape(userID))
	if err := fr.Sign(c.identity.ServerName, c.identity.KeyID, c.identity.PrivateKey); err != nil {
		return err
	}
	req, err := fr.HTTPRequest()
	if err != nil {
		return err
	}
	return c.DoRequestAndParseResponse(ctx, req, out)
}

// LegacyDownloadMedia asks a server that lacks the federation media endpoints for its
// media through the deprecated unauthenticated client path (with allow_remote=false, so a
// server never forwards it). The caller closes the body.
func (c *Client) LegacyDownloadMedia(ctx context.Context, s spec.ServerName, mediaID string) (*http.Response, error) {
	return c.plain.CreateMediaDownloadRequest(ctx, s, mediaID)
}

// CloseIdleConnections closes every pooled idle connection.
func (c *Client) CloseIdleConnections() {
	c.transport.CloseIdleConnections()
}

// New is a federation client signing as opts.ServerName. Requests go to matrix://<server>
// URLs, which the transport resolves (see Resolver).
func New(opts Options) *Client {
	if opts.Resolver == nil {
		opts.Resolver = NewResolver(opts.SkipVerify, opts.Deny)
	}
	if opts.Timeout == 0 {
		opts.Timeout = 30 * time.Second
	}
	if opts.SkipVerify && opts.Logger != nil {
		opts.Logger.Warn("federation_api.disable_tls_validation is on: remote servers' TLS certificates are NOT verified; " +
			"anyone on the network path can impersonate other servers. Use this only for tests and local development")
	}
	identity := &fclient.SigningIdentity{ServerName: opts.ServerName, KeyID: opts.KeyID, PrivateKey: opts.PrivateKey}
	tr := NewTransport(opts.Resolver, opts.SkipVerify, opts.Deny)
	clientOpts := []fclient.ClientOption{fclient.WithTransport(tr), fclient.WithTimeout(opts.Timeout), fclient.WithUserAgent("Dendrite")}
	return &Client{
		FederationClient: fclient.NewFederationClient([]*fclient.SigningIdentity{identity}, clientOpts...),
		plain:            fclient.NewClient(clientOpts...), transport: tr, identity: identity,
	}
}

// Transport is an http.RoundTripper for matrix://<server name>/<path> URLs: it resolves the
// server name and sends the request over HTTPS to each destination in turn, with the Host
// header and certificate name the resolution says. Other URLs are sent as they are.
type Transport struct {
	resolver   *Resolver
	skipVerify bool
	deny       *outbound.Policy

	mu         sync.Mutex
	transports map[string]*http.Transport // by TLS server name
}

// NewTransport resolves with r; skipVerify accepts any certificate; deny (nil: none) are
// the networks it never connects to.
func NewTransport(r *Resolver, skipVerify bool, deny *outbound.Policy) *Transport {
	return &Transport{resolver: r, skipVerify: skipVerify, deny: deny, transports: map[string]*http.Transport{}}
}

func newHTTPTransport(tlsServerName string, skipVerify bool, deny *outbound.Policy) *http.Transport {
	return &http.Transport{
		// Outbound federation never goes through a proxy from the environment: the
		// certificate and Host header must be the remote server's, and the deny list is
		// checked on the address actually connected to.
		Proxy:               nil,
		DialContext:         deny.Dialer(5*time.Second, 30*time.Second).DialContext,
		TLSClientConfig:     &tls.Config{ServerName: tlsServerName, InsecureSkipVerify: skipVerify, MinVersion: tls.VersionTLS12}, // nolint: gosec // skipVerify is the documented test-only switch
		TLSHandshakeTimeout: 10 * time.Second,
		MaxIdleConnsPerHost: 4,
		IdleConnTimeout:     90 * time.Second,
		ForceAttemptHTTP2:   true,
	}
}

// transport is the pooled transport presenting tlsServerName (SNI, certificate name).
func (t *Transport) transport(tlsServerName string) *http.Transport {
	t.mu.Lock()
	defer t.mu.Unlock()
	tr := t.transports[tlsServerName]
	if tr == nil {
		tr = newHTTPTransport(tlsServerName, t.skipVerify, t.deny)
		t.transports[tlsServerName] = tr
	}
	return tr
}

// RoundTrip implements http.RoundTripper.
func (t *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL.Scheme != "matrix" {
		return t.transport(req.URL.Hostname()).RoundTrip(req)
	}
	if req.Body != nil {
		// Each attempt sends a copy from GetBody; the original is closed as RoundTrip must.
		defer req.Body.Close() // nolint: errcheck // nothing to do about it
	}
	serverName := spec.ServerName(req.URL.Host)
	var errs []error
	for attempt := 0; attempt < 2; attempt++ {
		results, err := t.resolver.Resolve(req.Context(), serverName)
		if err != nil {
			return nil, err
		}
		for _, res := range results {
			out, err := rewrite(req, res)
			if err != nil {
				return nil, err
			}
			resp, err := t.transport(res.TLSServerName).RoundTrip(out)
			if err == nil {
				return resp, nil
			}
			errs = append(errs, fmt.Errorf("%s: %w", res.Destination, err))
			if req.Context().Err() != nil {
				return nil, errors.Join(errs...)
			}
		}
		// No destination answered: the cached resolution may be stale; look again once.
		t.resolver.Forget(serverName)
	}
	return nil, fmt.Errorf("no destination of %s answered: %w", serverName, errors.Join(errs...))
}

// rewrite is req sent to one resolved destination: https://<destination><path> with the
// Host header of the resolution, and a fresh copy of the body.
func rewrite(req *http.Request, res fclient.ResolutionResult) (*http.Request, error) {
	out := req.Clone(req.Context())
	u := *req.URL
	u.Scheme, u.Host = "https", res.Destination
	out.URL, out.Host = &u, string(res.Host)
	if req.Body != nil && req.Body != http.NoBody {
		if req.GetBody == nil {
			return nil, errors.New("federation request body cannot be replayed")
		}
		body, err := req.GetBody()
		if err != nil {
			return nil, err
		}
		out.Body = body
	}
	return out, nil
}

// CloseIdleConnections closes every pooled idle connection.
func (t *Transport) CloseIdleConnections() {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, tr := range t.transports {
		tr.CloseIdleConnections()
	}
}
