package routing

import (
	"crypto/hmac"
	"crypto/sha1" // nolint: gosec // the shared-secret protocol (Synapse, sytest) fixes HMAC-SHA1
	"encoding/hex"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/matrix-org/dendrite/internal/httputil"
	"github.com/matrix-org/dendrite/internal/matrixerr"
	uapi "github.com/matrix-org/dendrite/userapi/api"
)

const (
	// nonceTTL is how long a shared-secret registration nonce stays usable.
	nonceTTL = time.Minute
	// maxNonces bounds the nonces kept at once; beyond it, issuing fails with 429.
	maxNonces = 10000
)

// nonceStore holds the shared-secret registration nonces of this process, each usable
// once until it expires. The protocol is Synapse's admin API, not the Matrix spec; as the
// nonces live in memory, a client must send its POST to the process that issued the nonce.
type nonceStore struct {
	mu     sync.Mutex
	nonces map[string]time.Time
}

func newNonceStore() *nonceStore {
	return &nonceStore{nonces: map[string]time.Time{}}
}

// issue makes a new nonce.
func (s *nonceStore) issue() (string, error) {
	nonce, err := randomHex(16)
	if err != nil {
		return "", err
	}
	now := time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	for n, exp := range s.nonces {
		if now.After(exp) {
			delete(s.nonces, n)
		}
	}
	if len(s.nonces) >= maxNonces {
		return "", matrixerr.LimitExceeded(nonceTTL)
	}
	s.nonces[nonce] = now.Add(nonceTTL)
	return nonce, nil
}

// consume removes the nonce and reports whether it was valid.
func (s *nonceStore) consume(nonce string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	exp, ok := s.nonces[nonce]
	delete(s.nonces, nonce)
	return ok && time.Now().Before(exp)
}

type sharedSecretRequest struct {
	Nonce       string `json:"nonce"`
	Username    string `json:"username"`
	DisplayName string `json:"displayname"`
	Password    string `json:"password"`
	Admin       bool   `json:"admin"`
	UserType    string `json:"user_type"`
	MAC         string `json:"mac"`
}

// mac is the expected HMAC-SHA1, keyed by the secret, of
// nonce NUL username NUL password NUL ("admin"|"notadmin") [NUL user_type].
func (req *sharedSecretRequest) mac(secret string) []byte {
	m := hmac.New(sha1.New, []byte(secret))
	admin := "notadmin"
	if req.Admin {
		admin = "admin"
	}
	for i, part := range []string{req.Nonce, req.Username, req.Password, admin} {
		if i > 0 {
			m.Write([]byte{0})
		}
		m.Write([]byte(part))
	}
	if req.UserType != "" {
		m.Write([]byte{0})
		m.Write([]byte(req.UserType))
	}
	return m.Sum(nil)
}

func (a *Accounts) sharedSecretEnabled() error {
	if a.Cfg.RegistrationSharedSecret == "" {
		return matrixerr.Forbidden("shared-secret registration is disabled")
	}
	return nil
}

// SharedSecretNonce is GET /_synapse/admin/v1/register.
func (a *Accounts) SharedSecretNonce(*http.Request) (httputil.Response, error) {
	if err := a.sharedSecretEnabled(); err != nil {
		return httputil.Response{}, err
	}
	nonce, err := a.nonces.issue()
	if err != nil {
		return httputil.Response{}, err
	}
	return httputil.OK(map[string]string{"nonce": nonce}), nil
}

// SharedSecretRegister is POST /_synapse/admin/v1/register. The nonce is spent before
// the MAC is checked, so each nonce allows one guess.
func (a *Accounts) SharedSecretRegister(r *http.Request) (httputil.Response, error) {
	if err := a.sharedSecretEnabled(); err != nil {
		return httputil.Response{}, err
	}
	var req sharedSecretRequest
	if err := httputil.DecodeJSON(r, &req); err != nil {
		return httputil.Response{}, err
	}
	if !a.nonces.consume(req.Nonce) {
		return httputil.Response{}, matrixerr.BadRequest("unrecognised nonce")
	}
	got, err := hex.DecodeString(req.MAC)
	if err != nil || !hmac.Equal(got, req.mac(a.Cfg.RegistrationSharedSecret)) {
		return httputil.Response{}, matrixerr.Forbidden("HMAC incorrect")
	}
	if err = checkPassword(req.Password); err != nil {
		return httputil.Response{}, err
	}
	// The MAC covers the username as sent; the account's localpart is its lower case, as
	// with /register.
	req.Username = strings.ToLower(req.Username)
	if err = a.checkAvailable(r.Context(), req.Username); err != nil {
		return httputil.Response{}, err
	}
	accType := uapi.AccountTypeUser
	if req.Admin {
		accType = uapi.AccountTypeAdmin
	}
	acc, err := a.createAccount(r.Context(), req.Username, req.Password, accType)
	if err != nil {
		return httputil.Response{}, err
	}
	if req.DisplayName != "" {
		if _, err = a.UserAPI.PerformSetDisplayName(r.Context(), &uapi.PerformSetDisplayNameRequest{Localpart: acc.Localpart, DisplayName: req.DisplayName}); err != nil {
			return httputil.Response{}, err
		}
	}
	return a.loginDevice(r, acc.Localpart, nil, nil)
}
