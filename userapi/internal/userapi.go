// Package internal implements the userapi's ClientUserAPI on its storage: accounts with
// bcrypt password hashes, devices whose access tokens are stored only as SHA-256 hashes,
// profiles, account data (announced on the OutputClientData topic), filters, and
// end-to-end encryption keys (changes announced on OutputKeyChangeEvent).
package internal

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/sirupsen/logrus"
	"golang.org/x/crypto/bcrypt"

	"github.com/matrix-org/dendrite/internal/config"
	"github.com/matrix-org/dendrite/internal/eventlog"
	"github.com/matrix-org/dendrite/internal/matrixerr"
	"github.com/matrix-org/dendrite/userapi/api"
	"github.com/matrix-org/dendrite/userapi/storage"
)

// tokenPrefix marks this server's access tokens, so that a leaked one is recognisable.
const tokenPrefix = "syt_"

// lastSeenGranularity is how stale a device's last-seen time may get before a token
// lookup refreshes it: one write per device per interval, not one per request.
const lastSeenGranularity = 5 * time.Minute

// maxUserIDBytes is the spec's limit on a whole user ID.
const maxUserIDBytes = 255

// maxDeviceIDBytes bounds client-chosen device IDs.
const maxDeviceIDBytes = 255

// UserAPI implements api.ClientUserAPI.
type UserAPI struct {
	DB         storage.Database
	ServerName string
	BCryptCost int
	// Log and ClientDataTopic receive account data changes, KeyChangeTopic device key
	// changes; a nil Log announces nothing.
	Log             eventlog.Log
	ClientDataTopic string
	KeyChangeTopic  string
	// OutputWindow is how long produced records stay in the outbox for readers to fetch
	// what a wiped log lost (QueryOutputRecords); negative keeps them forever.
	OutputWindow time.Duration
	Logger       *logrus.Entry
	Metrics      *Metrics
	// AppServices are the application services whose as_tokens QueryAccessToken accepts.
	AppServices *config.AppServiceAPI
	// Remote fetches other servers' users' device lists for the cache (nil: none is
	// fetched; queries are answered from what device list updates cached).
	Remote api.RemoteDeviceFetcher
	resync *resyncs
	out    *outbox
	// dummyHash is compared against when a login names an unknown account, so that the
	// answer takes as long as for a known one.
	dummyHash []byte
}

var _ api.ClientUserAPI = (*UserAPI)(nil)

// New returns the API with its timing-equaliser hash computed.
func New(u UserAPI) (*UserAPI, error) {
	h, err := bcrypt.GenerateFromPassword([]byte("no account has this password"), u.BCryptCost)
	if err != nil {
		return nil, fmt.Errorf("compute dummy password hash: %w", err)
	}
	u.dummyHash = h
	u.out = &outbox{wake: make(chan struct{}, 1)}
	u.resync = &resyncs{inFlight: map[string]*resyncCall{}, queue: make(chan string, resyncQueueSize)}
	if u.Metrics == nil {
		u.Metrics = NewMetrics(nil)
	}
	if u.AppServices == nil {
		u.AppServices = &config.AppServiceAPI{}
	}
	return &u, nil
}

// userID is the full user ID of a local localpart.
func (u *UserAPI) userID(localpart string) string {
	return "@" + localpart + ":" + u.ServerName
}

// localpart returns the localpart of a local user ID, or an error for a malformed or
// remote one.
func (u *UserAPI) localpart(userID string) (string, error) {
	local, ok := strings.CutPrefix(userID, "@")
	if !ok {
		return "", matrixerr.InvalidParam("invalid user ID")
	}
	local, domain, ok := strings.Cut(local, ":")
	if !ok || local == "" {
		return "", matrixerr.InvalidParam("invalid user ID")
	}
	if domain != u.ServerName {
		return "", matrixerr.NotFound("not a local user")
	}
	return local, nil
}

// isRemoteUser reports whether userID is a user ID of another server.
func (u *UserAPI) isRemoteUser(userID string) bool {
	_, err := u.localpart(userID)
	var merr *matrixerr.Error
	return errors.As(err, &merr) && merr.Code == "M_NOT_FOUND"
}

// ValidateLocalpart checks a localpart against the spec's grammar (a-z, 0-9 and
// "-._=/+") and the 255-byte limit on the whole user ID.
func ValidateLocalpart(localpart, serverName string) error {
	if localpart == "" {
		return matrixerr.InvalidUsername("the username must not be empty")
	}
	for i := 0; i < len(localpart); i++ {
		c := localpart[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || strings.IndexByte("-._=/+", c) >= 0) {
			return matrixerr.InvalidUsername("the username may contain only a-z, 0-9 and -._=/+")
		}
	}
	if len("@"+localpart+":"+serverName) > maxUserIDBytes {
		return matrixerr.InvalidUsername("the user ID would be longer than 255 bytes")
	}
	return nil
}

// bcryptInput is what bcrypt hashes: bcrypt reads at most 72 bytes, and refuses longer
// input, so longer passwords are reduced to their hex SHA-256 first (both when hashing
// and when checking), which keeps every byte of them significant.
func bcryptInput(password string) []byte {
	if len(password) <= 72 {
		return []byte(password)
	}
	sum := sha256.Sum256([]byte(password))
	return []byte(hex.EncodeToString(sum[:]))
}

// hashToken is how access tokens are stored.
func hashToken(token string) []byte {
	sum := sha256.Sum256([]byte(token))
	return sum[:]
}

// newAccessToken is tokenPrefix and 32 random bytes, base64url.
func newAccessToken() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return tokenPrefix + base64.RawURLEncoding.EncodeToString(b), nil
}

// newDeviceID is 10 random upper-case letters.
func newDeviceID() (string, error) {
	b := make([]byte, 10)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	for i := range b {
		// 256 is not a multiple of 26; the bias is below 1% and device IDs need no secrecy.
		b[i] = 'A' + b[i]%26
	}
	return string(b), nil
}

func nowMS() int64 {
	return time.Now().UnixMilli()
}

// notFound turns storage.ErrNotFound into a 404 with msg and wraps anything else.
func notFound(err error, msg string) error {
	if errors.Is(err, storage.ErrNotFound) {
		return matrixerr.NotFound(msg)
	}
	return err
}
