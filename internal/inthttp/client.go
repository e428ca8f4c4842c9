package inthttp

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/matrix-org/dendrite/internal/matrixerr"
)

// ClientOptions tunes a Client. The zero value works.
type ClientOptions struct {
	// HTTPClient makes the requests; nil means NewHTTPClient(). Leave its Timeout at 0: the
	// context's deadline bounds every call (some calls, such as QueryInputResult, wait).
	HTTPClient *http.Client
	// Timeout is the deadline of a call whose context has none; 0 means DefaultTimeout.
	Timeout time.Duration
	// Metrics records call latency; nil records nothing.
	Metrics *Metrics
}

// Client calls one component's internal API at one base URL. It is safe for concurrent use.
type Client struct {
	baseURL   string
	component string
	http      *http.Client
	timeout   time.Duration
	metrics   *Metrics
}

// NewClient calls component's methods at baseURL (for example "http://roomserver-0:7770").
func NewClient(baseURL, component string, opts ClientOptions) *Client {
	if opts.HTTPClient == nil {
		opts.HTTPClient = NewHTTPClient()
	}
	if opts.Timeout <= 0 {
		opts.Timeout = DefaultTimeout
	}
	return &Client{
		baseURL: strings.TrimRight(baseURL, "/"), component: component,
		http: opts.HTTPClient, timeout: opts.Timeout, metrics: opts.Metrics,
	}
}

// NewHTTPClient is an HTTP client for internal calls: keep-alive connections (up to 100 idle
// per callee, since one writer calls one shard very often), a bounded dial, no proxy (internal
// addresses are never proxied) and no overall timeout (contexts bound calls).
func NewHTTPClient() *http.Client {
	return &http.Client{Transport: &http.Transport{
		DialContext:           (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:          1000,
		MaxIdleConnsPerHost:   100,
		IdleConnTimeout:       90 * time.Second,
		ExpectContinueTimeout: time.Second,
	}}
}

// Call calls the method of c's component that req belongs to (MethodName) and returns its
// answer. Errors:
//   - the callee's *matrixerr.Error, rebuilt with its code, status, message and extra fields;
//   - *RemoteError for the callee's internal failures and refusals (detail in its log);
//   - *UnreachableError when the callee's address gave no answer (down, restarting);
//   - a wrapped transport error (errors.Is finds context.DeadlineExceeded or
//     context.Canceled when ctx ended).
//
// Methods are idempotent (STYLE 3), so the caller may retry; Call itself never does.
func Call[Res, Req any](ctx context.Context, c *Client, req *Req) (*Res, error) {
	method, err := MethodName[Req]()
	if err != nil {
		return nil, err
	}
	start := time.Now()
	res, outcome, err := call[Res](ctx, c, method, req)
	c.metrics.observe(c.component, method, sideClient, outcome, time.Since(start))
	return res, err
}

func call[Res any](ctx context.Context, c *Client, method string, req any) (*Res, string, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.timeout)
		defer cancel()
	}
	fail := func(outcome string, err error) (*Res, string, error) {
		return nil, outcome, fmt.Errorf("internal API %s/%s: %w", c.component, method, err)
	}
	if err := ctx.Err(); err != nil {
		return fail(outcomeTimeout, err)
	}
	body, err := json.Marshal(req)
	if err != nil {
		return fail(outcomeBadRequest, fmt.Errorf("encode request: %w", err))
	}
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, c.baseURL+Path(c.component, method), bytes.NewReader(body))
	if err != nil {
		return fail(outcomeBadRequest, err)
	}
	hreq.Header.Set("Content-Type", "application/json")
	deadline, _ := ctx.Deadline()
	// Round up so that a call with under a millisecond left is not sent as "already expired".
	ms := (time.Until(deadline) + time.Millisecond - 1).Milliseconds()
	hreq.Header.Set(HeaderTimeout, strconv.FormatInt(max(ms, 1), 10))
	hres, err := c.http.Do(hreq)
	if err != nil {
		if ctx.Err() != nil {
			return fail(outcomeTimeout, err)
		}
		return nil, outcomeNetwork, &UnreachableError{Component: c.component, Method: method, Err: err}
	}
	defer hres.Body.Close() //nolint:errcheck // read-only body; nothing to do about a failed close
	b, err := io.ReadAll(hres.Body)
	if err != nil {
		return fail(outcomeNetwork, fmt.Errorf("read response: %w", err))
	}
	if hres.StatusCode == http.StatusOK {
		var res *Res
		if err := json.Unmarshal(b, &res); err != nil {
			return fail(outcomeInternal, fmt.Errorf("decode response: %w", err))
		}
		return res, outcomeOK, nil
	}
	var we wireError
	decoded := json.Unmarshal(b, &we) == nil
	if decoded && hres.Header.Get(HeaderError) == ErrorMatrix {
		return nil, outcomeMatrix, &matrixerr.Error{
			Code: we.Code, Message: we.Message, Status: we.Status,
			RetryAfterMS: we.RetryAfterMS, RoomVersion: we.RoomVersion,
		}
	}
	rerr := &RemoteError{Component: c.component, Method: method, StatusCode: hres.StatusCode, Message: http.StatusText(hres.StatusCode)}
	if decoded && hres.Header.Get(HeaderError) == ErrorInternal {
		rerr.Message = we.Message
	}
	outcome := outcomeInternal
	switch {
	case hres.StatusCode == http.StatusGatewayTimeout:
		outcome = outcomeTimeout
	case hres.StatusCode < 500:
		outcome = outcomeBadRequest
	}
	return nil, outcome, rerr
}
