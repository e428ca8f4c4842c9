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
	"crypto/sha256"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
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

// Lookup returns the Matrix user ID the identity server has bound tp to, "" when none
// (GET /hash_details, then POST /lookup with the sha256 algorithm, else none).
func (c *Client) Lookup(ctx context.Context, server, accessToken string, tp ThreePID) (string, error) {
	var details struct {
		Pepper     string   `json:"lookup_pepper"`
		Algorithms []string `json:"algorithms"`
	}
	if err := c.call(ctx, http.MethodGet, server, "/_matrix/identity/v2/hash_details", bearer(accessToken), nil, &details); err != nil {
		return "", err
	}
	var algorithm, address string
	switch {
	case contains(details.Algorithms, "sha256"):
		sum := sha256.Sum256([]byte(tp.Address + " " + tp.Medium + " " + details.Pepper))
		algorithm, address = "sha256", base64.RawURLEncoding.EncodeToString(sum[:])
	case contains(details.Algorithms, "none"):
		algorithm, address = "none", tp.Address+" "+tp.Medium
	default:
		return "", fmt.Errorf("identity server %s: no lookup algorithm this server knows", server)
	}
	var out struct {
		Mappings map[string]string `json:"mappings"`
	}
	body := map[string]any{"algorithm": algorithm, "pepper": details.Pepper, "addresses": []string{address}}
	if err := c.call(ctx, http.MethodPost, server, "/_matrix/identity/v2/lookup", bearer(accessToken), body, &out); err != nil {
		return "", err
	}
	return out.Mappings[address], nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// PublicKey is one of an identity server's keys with the URL that says whether it is
// still valid (the spec's PublicKey in m.room.third_party_invite).
type PublicKey struct {
	PublicKey      string `json:"public_key"`
	KeyValidityURL string `json:"key_validity_url"`
}

// StoredInvite is the identity server's answer to store-invite.
type StoredInvite struct {
	Token       string      `json:"token"`
	DisplayName string      `json:"display_name"`
	PublicKey   string      `json:"public_key"`
	PublicKeys  []PublicKey `json:"public_keys"`
}

// InviteRequest is what store-invite is told about an invite.
type InviteRequest struct {
	ThreePID
	RoomID string `json:"room_id"`
	Sender string `json:"sender"`
}

// StoreInvite asks the identity server to keep an invite of tp until the address is bound
// (POST /_matrix/identity/v2/store-invite).
func (c *Client) StoreInvite(ctx context.Context, server, accessToken string, inv InviteRequest) (*StoredInvite, error) {
	var out StoredInvite
	if err := c.call(ctx, http.MethodPost, server, "/_matrix/identity/v2/store-invite", bearer(accessToken), inv, &out); err != nil {
		return nil, err
	}
	if out.Token == "" || (out.PublicKey == "" && len(out.PublicKeys) == 0) {
		return nil, fmt.Errorf("identity server %s: store-invite answer has no token or key", server)
	}
	return &out, nil
}

// keyValid asks a key validity URL (from an m.room.third_party_invite) whether publicKey is
// still valid.
func (c *Client) keyValid(ctx context.Context, validityURL, publicKey string) (bool, error) {
	u, err := url.Parse(validityURL)
	if err != nil || u.Scheme != "https" || !ValidServerName(u.Host) {
		return false, fmt.Errorf("key validity URL %q: not an https URL", validityURL)
	}
	var out struct {
		Valid bool `json:"valid"`
	}
	err = c.call(ctx, http.MethodGet, u.Host, u.EscapedPath()+"?public_key="+url.QueryEscape(publicKey), nil, nil, &out)
	return out.Valid, err
}

// ErrInviteNotSigned is returned by CheckInviteSigned when no key of the invite signed the
// block, or the identity server no longer considers the key that did valid.
var ErrInviteNotSigned = errors.New("the third-party invite's signed block is not signed by a valid key of the invite")

// CheckInviteSigned checks an identity server's signed block (mxid, token, signatures) of a
// third-party invite: one of the m.room.third_party_invite's keys must have signed it (all
// of it: the signature covers every key of the block), and the identity server must still
// consider that key valid (its key_validity_url; an identity server that cannot be asked
// fails the check, as the key may have been revoked).
func (c *Client) CheckInviteSigned(ctx context.Context, signed json.RawMessage, keys []PublicKey) error {
	var block struct {
		Signatures map[string]map[string]string `json:"signatures"`
	}
	if err := json.Unmarshal(signed, &block); err != nil {
		return ErrInviteNotSigned
	}
	for _, k := range keys {
		var pub spec.Base64Bytes
		if pub.Decode(k.PublicKey) != nil || len(pub) != ed25519.PublicKeySize {
			continue
		}
		for domain, sigs := range block.Signatures {
			for keyID := range sigs {
				if !strings.HasPrefix(keyID, "ed25519:") ||
					gomatrixserverlib.VerifyJSON(domain, gomatrixserverlib.KeyID(keyID), ed25519.PublicKey(pub), signed) != nil {
					continue
				}
				valid, err := c.keyValid(ctx, k.KeyValidityURL, k.PublicKey)
				if err != nil {
					return fmt.Errorf("ask whether the invite's key is valid: %w", err)
				}
				if !valid {
					return ErrInviteNotSigned
				}
				return nil
			}
		}
	}
	return ErrInviteNotSigned
}

// InviteKeys are the keys of an m.room.third_party_invite's content: public_key with
// key_validity_url, and public_keys.
func InviteKeys(content []byte) []PublicKey {
	var c struct {
		PublicKey      string      `json:"public_key"`
		KeyValidityURL string      `json:"key_validity_url"`
		PublicKeys     []PublicKey `json:"public_keys"`
	}
	if json.Unmarshal(content, &c) != nil {
		return nil
	}
	keys := c.PublicKeys
	if c.PublicKey != "" {
		keys = append([]PublicKey{{PublicKey: c.PublicKey, KeyValidityURL: c.KeyValidityURL}}, keys...)
	}
	return keys
}
