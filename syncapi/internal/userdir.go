package internal

import (
	"context"
	"unicode/utf8"

	"github.com/matrix-org/dendrite/internal/matrixerr"
)

// Limits of POST /user_directory/search.
const (
	DefaultDirectoryLimit = 10
	MaxDirectoryLimit     = 100
	maxSearchTermBytes    = 1024
)

// DirectoryUser is one result of a user directory search.
type DirectoryUser struct {
	UserID      string `json:"user_id"`
	DisplayName string `json:"display_name,omitempty"`
	AvatarURL   string `json:"avatar_url,omitempty"`
}

// DirectoryResults is the answer to POST /user_directory/search.
type DirectoryResults struct {
	Results []DirectoryUser `json:"results"`
	Limited bool            `json:"limited"`
}

// SearchUserDirectory finds the users searcher may find: those who share a joined room
// with searcher, and those joined to public or world-readable rooms. limit must already be
// clamped to [0, MaxDirectoryLimit].
func (s *Syncer) SearchUserDirectory(ctx context.Context, searcher, term string, limit int) (*DirectoryResults, error) {
	if len(term) > maxSearchTermBytes || !utf8.ValidString(term) {
		return nil, matrixerr.InvalidParam("search_term is too long")
	}
	users, limited, err := s.db.SearchUserDirectory(ctx, searcher, term, limit)
	if err != nil {
		return nil, err
	}
	res := &DirectoryResults{Results: make([]DirectoryUser, 0, len(users)), Limited: limited}
	for _, u := range users {
		res.Results = append(res.Results, DirectoryUser{UserID: u.UserID, DisplayName: u.DisplayName, AvatarURL: u.AvatarURL})
	}
	return res, nil
}
