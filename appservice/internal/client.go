package internal

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/matrix-org/dendrite/appservice/storage"
	"github.com/matrix-org/dendrite/internal/config"
)

// maxResponseBytes bounds what is read of a service's answer.
const maxResponseBytes = 1 << 20

// Client makes the homeserver's requests to application services, each authenticated with
// the service's hs_token as a bearer token (the Authorization header of spec v1.4 on; the
// token is never put in the URL, where it would reach access logs).
type Client struct {
	http    *http.Client
	timeout time.Duration
}

// NewClient is a Client whose requests time out after timeout; skipVerify accepts any TLS
// certificate (tests on loopback only).
func NewClient(timeout time.Duration, skipVerify bool) *Client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	if skipVerify {
		tr.TLSClientConfig = &tls.Config{InsecureSkipVerify: true} // #nosec G402 -- operator's explicit choice for tests
	}
	return &Client{http: &http.Client{Transport: tr, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}, timeout: timeout}
}

// StatusError is a service's non-2xx answer.
type StatusError struct {
	Status int
	Body   []byte
}

func (e *StatusError) Error() string {
	return fmt.Sprintf("application service answered %d", e.Status)
}

// errNoURL is returned for a service registered without a URL.
var errNoURL = errors.New("the application service has no url")

// do sends method path (with query) to the service with body (nil for none) and decodes a
// 2xx answer's JSON into out (nil to require only a JSON object).
func (c *Client) do(ctx context.Context, as *config.ApplicationService, method, path string, query url.Values, body any, out any) error {
	if as.URL == "" {
		return errNoURL
	}
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return fmt.Errorf("encode request: %w", err)
		}
		rd = bytes.NewReader(b)
	}
	u := strings.TrimSuffix(as.URL, "/") + path
	if len(query) > 0 {
		u += "?" + query.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return fmt.Errorf("build request: %w", err)
	}
	req.Header.Set("Authorization", "Bearer "+as.HSToken)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	res, err := c.http.Do(req)
	if err != nil {
		return err
	}
	defer res.Body.Close() // nolint: errcheck // read-only
	b, err := io.ReadAll(io.LimitReader(res.Body, maxResponseBytes))
	if err != nil {
		return fmt.Errorf("read answer: %w", err)
	}
	if res.StatusCode < 200 || res.StatusCode > 299 {
		return &StatusError{Status: res.StatusCode, Body: b}
	}
	if out == nil {
		var obj map[string]json.RawMessage
		out = &obj
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("application service answered with malformed JSON: %w", err)
	}
	return nil
}

// transactionBody is PUT /_matrix/app/v1/transactions/{txnId}. Ephemeral events go under
// the spec's key and under MSC2409's, which bridges written before it was merged read;
// to-device messages, not in the spec yet, under MSC4203's key and MSC2409's (a service
// reads one of each pair).
type transactionBody struct {
	Events           []json.RawMessage `json:"events"`
	Ephemeral        []json.RawMessage `json:"ephemeral,omitempty"`
	EphemeralMSC2409 []json.RawMessage `json:"de.sorunome.msc2409.ephemeral,omitempty"`
	ToDevice         []json.RawMessage `json:"to_device,omitempty"`
	ToDeviceMSC2409  []json.RawMessage `json:"de.sorunome.msc2409.to_device,omitempty"`
}

// SendTransaction puts the transaction; the service must answer 2xx with a JSON object.
func (c *Client) SendTransaction(ctx context.Context, as *config.ApplicationService, txn *storage.Transaction) error {
	body := transactionBody{Events: raw(txn.Events), Ephemeral: raw(txn.Ephemeral), ToDevice: raw(txn.ToDevice)}
	body.EphemeralMSC2409, body.ToDeviceMSC2409 = body.Ephemeral, body.ToDevice
	txnID := strconv.FormatInt(txn.TxnID, 10)
	return c.do(ctx, as, http.MethodPut, "/_matrix/app/v1/transactions/"+url.PathEscape(txnID), nil, body, nil)
}

func raw(items [][]byte) []json.RawMessage {
	out := make([]json.RawMessage, len(items))
	for i, it := range items {
		out[i] = it
	}
	return out
}
