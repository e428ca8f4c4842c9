package routing

import (
	"net/http"

	"github.com/matrix-org/dendrite/internal/httputil"
	"github.com/matrix-org/dendrite/internal/matrixerr"
	"github.com/matrix-org/dendrite/syncapi/internal"
	uapi "github.com/matrix-org/dendrite/userapi/api"
)

// userDirectorySearch is POST /user_directory/search. A limit above the maximum is
// clamped; a negative one is refused.
func (h *Handlers) userDirectorySearch(r *http.Request, dev *uapi.Device) (httputil.Response, error) {
	var body struct {
		SearchTerm *string `json:"search_term"`
		Limit      *int64  `json:"limit"`
	}
	if err := httputil.DecodeJSON(r, &body); err != nil {
		return httputil.Response{}, err
	}
	if body.SearchTerm == nil {
		return httputil.Response{}, matrixerr.MissingParam("search_term is required")
	}
	limit := int64(internal.DefaultDirectoryLimit)
	if body.Limit != nil {
		if *body.Limit < 0 {
			return httputil.Response{}, matrixerr.InvalidParam("limit must not be negative")
		}
		limit = min(*body.Limit, internal.MaxDirectoryLimit)
	}
	res, err := h.Syncer.SearchUserDirectory(r.Context(), dev.UserID, *body.SearchTerm, int(limit))
	if err != nil {
		return httputil.Response{}, err
	}
	return httputil.OK(res), nil
}
