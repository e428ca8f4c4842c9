package routing

import (
	"encoding/json"
	"sync"
	"time"

	"github.com/matrix-org/dendrite/internal/matrixerr"
)

const (
	// registerSessionTTL is how long a registration's User-Interactive Authentication
	// session stays usable after it was started.
	registerSessionTTL = 30 * time.Minute
	// maxRegisterSessions bounds the sessions kept at once; beyond it, starting one fails
	// with 429.
	maxRegisterSessions = 10000
)

// registerSession is one registration's User-Interactive Authentication session: the
// parameters of the request that started it (every later request of the session uses them,
// filling in only what the first one left out) and, once an account was created, its user
// ID, so that repeating the completing request registers nobody new. Its mutex is held while
// a request of the session creates the account.
type registerSession struct {
	mu      sync.Mutex
	params  map[string]json.RawMessage
	userID  string
	expires time.Time
}

// registerSessionStore holds the registration sessions of this process. As they live in
// memory, a client must send a session's requests to the process that started it (there is
// one clientapi process); a session this process does not know (expired, or lost in a
// restart) counts as none, and the request stands on its own parameters.
type registerSessionStore struct {
	mu       sync.Mutex
	sessions map[string]*registerSession
}

func newRegisterSessionStore() *registerSessionStore {
	return &registerSessionStore{sessions: map[string]*registerSession{}}
}

// start makes a session holding params and returns its ID.
func (s *registerSessionStore) start(params map[string]json.RawMessage) (string, error) {
	id, err := randomHex(16)
	if err != nil {
		return "", err
	}
	now := time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	for sid, sess := range s.sessions {
		if now.After(sess.expires) {
			delete(s.sessions, sid)
		}
	}
	if len(s.sessions) >= maxRegisterSessions {
		return "", matrixerr.LimitExceeded(time.Minute)
	}
	s.sessions[id] = &registerSession{params: params, expires: now.Add(registerSessionTTL)}
	return id, nil
}

// get returns the live session with this ID, or nil.
func (s *registerSessionStore) get(id string) *registerSession {
	if id == "" {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	sess, ok := s.sessions[id]
	if !ok || time.Now().After(sess.expires) {
		return nil
	}
	return sess
}
