// Package identity is this server's client of identity servers (the Matrix identity service
// API, v2): binding and unbinding third-party identifiers (3PIDs) for local users, looking up
// the user bound to an address and storing third-party invites.
//
// Identity servers are named by clients (id_server) and so are addresses others choose:
// every request goes through the outbound dialer, which refuses global.deny_networks.
package identity

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/fclient"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/matrix-org/dendrite/internal/outbound"
)

// maxResponseBytes bounds what is read of an identity server's answer.
const maxResponseBytes = 1 << 20

// ErrNotBound is returned by Unbind when the identity server has no such binding (404).
var ErrNotBound = errors.New("the identity server has no such binding")

// Client talks to identity servers over HTTPS.
type Client struct {
	http       *http.Client
	serverName spec.ServerName
	keyID      gomatrixserverlib.KeyID
	key        ed25519.PrivateKey
}

// Options are what a Client is made from.
type Options struct {
	// Deny are the networks identity servers must not be in (global.deny_networks).
	Deny *outbound.Policy
	// SkipVerify accepts any TLS certificate (tests and development only).
	SkipVerify bool
	// ServerName, KeyID and Key sign unbind requests (X-Matrix authorization), which is how
	// an identity server knows that this homeserver speaks for the user.
	ServerName spec.ServerName
	KeyID      gomatrixserverlib.KeyID
	Key        ed25519.PrivateKey
}

// New makes a Client.
func New(o Options) *Client {
	tr := &http.Transport{Proxy: nil, DialContext: o.Deny.Dialer(10*time.Second, 30*time.Second).DialContext,
		TLSHandshakeTimeout: 10 * time.Second, MaxIdleConnsPerHost: 4, IdleConnTimeout: 90 * time.Second}
	if o.SkipVerify {
		tr.TLSClientConfig = &tls.Config{InsecureSkipVerify: true} // nolint: gosec // the operator asked for it (client_api.identity_servers.disable_tls_validation)
	}
	return &Client{http: &http.Client{Transport: tr, Timeout: 30 * time.Second}, serverName: o.ServerName, keyID: o.KeyID, key: o.Key}
}

// ValidServerName reports whether s can name an identity server: a host with an optional
// port, nothing else (no scheme, path, user info or query).
func ValidServerName(s string) bool {
	if s == "" || strings.ContainsAny(s, "/?#@\\ ") {
		return false
	}
	_, _, ok := spec.ParseAndValidateServerName(spec.ServerName(s))
	return ok
}

// StatusError is an identity server's non-2xx answer.
type StatusError struct {
	Code    int
	ErrCode string
}

// Error implements error.
func (e *StatusError) Error() string {
	return fmt.Sprintf("identity server answered %d %s", e.Code, e.ErrCode)
}

// call sends a JSON request (body nil: none) to https://server+path and decodes the JSON
// answer into out (nil: ignored).
func (c *Client) call(ctx context.Context, method, server, path string, header http.Header, body, out any) error {
	if !ValidServerName(server) {
		return fmt.Errorf("identity server %q: not a server name", server)
	}
	var rd io.Reader
	if body != nil {
		raw, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(raw)
	}
	req, err := http.NewRequestWithContext(ctx, method, "https://"+server+path, rd)
	if err != nil {
		return err
	}
	for k, v := range header {
		req.Header[k] = v
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("identity server %s: %w", server, err)
	}
	defer resp.Body.Close() // nolint: errcheck // read below; a close error changes nothing
	raw, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBytes))
	if err != nil {
		return fmt.Errorf("identity server %s: read answer: %w", server, err)
	}
	if resp.StatusCode/100 != 2 {
		se := &StatusError{Code: resp.StatusCode}
		var e struct {
			ErrCode string `json:"errcode"`
		}
		if json.Unmarshal(raw, &e) == nil {
			se.ErrCode = e.ErrCode
		}
		return se
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(raw, out); err != nil {
		return fmt.Errorf("identity server %s: answer is not the expected JSON: %w", server, err)
	}
	return nil
}

func bearer(token string) http.Header {
	if token == "" {
		return nil
	}
	return http.Header{"Authorization": {"Bearer " + token}}
}

// ThreePID is a third-party identifier.
type ThreePID struct {
	Medium  string `json:"medium"`
	Address string `json:"address"`
}

// Bind asks the identity server to bind the 3PID it validated in session sid to mxid
// (POST /_matrix/identity/v2/3pid/bind) and returns that 3PID.
func (c *Client) Bind(ctx context.Context, server, accessToken, sid, clientSecret, mxid string) (*ThreePID, error) {
	var out struct {
		ThreePID
		MXID string `json:"mxid"`
	}
	body := map[string]string{"sid": sid, "client_secret": clientSecret, "mxid": mxid}
	if err := c.call(ctx, http.MethodPost, server, "/_matrix/identity/v2/3pid/bind", bearer(accessToken), body, &out); err != nil {
		return nil, err
	}
	if out.Medium == "" || out.Address == "" || out.MXID != mxid {
		return nil, fmt.Errorf("identity server %s: bind answer names no 3PID of %s", server, mxid)
	}
	return &out.ThreePID, nil
}

// Unbind asks the identity server to remove the binding of tp to mxid
// (POST /_matrix/identity/v2/3pid/unbind), signed by this homeserver. ErrNotBound when the
// identity server has no such binding.
func (c *Client) Unbind(ctx context.Context, server, mxid string, tp ThreePID) error {
	const path = "/_matrix/identity/v2/3pid/unbind"
	body := map[string]any{"mxid": mxid, "threepid": tp}
	fr := fclient.NewFederationRequest(http.MethodPost, c.serverName, spec.ServerName(server), path)
	if err := fr.SetContent(body); err != nil {
		return err
	}
	if err := fr.Sign(c.serverName, c.keyID, c.key); err != nil {
		return err
	}
	signed, err := fr.HTTPRequest()
	if err != nil {
		return err
	}
	err = c.call(ctx, http.MethodPost, server, path, http.Header{"Authorization": signed.Header.Values("Authorization")}, body, nil)
	var se *StatusError
	if errors.As(err, &se) && se.Code == http.StatusNotFound {
		return ErrNotBound
	}
	return err
}
