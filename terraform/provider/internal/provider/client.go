package provider

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	neturl "net/url"
	"strings"
	"time"
)

// client calls the control plane's admin API (`/v1`) with an API key.
type client struct {
	base string
	key  string
	http *http.Client
}

// apiError is the admin API's error body, kept whole so diagnostics can name the fields it blames.
type apiError struct {
	Status  int
	Code    string `json:"code"`
	Message string `json:"message"`
	Fields  []struct {
		Field   string `json:"field"`
		Message string `json:"message"`
	} `json:"fields"`
}

func (e *apiError) Error() string {
	parts := []string{fmt.Sprintf("the control plane answered %d %s: %s", e.Status, e.Code, e.Message)}
	for _, f := range e.Fields {
		parts = append(parts, fmt.Sprintf("%s: %s", f.Field, f.Message))
	}
	return strings.Join(parts, "; ")
}

func (e *apiError) notFound() bool { return e.Status == http.StatusNotFound }

func newClient(url, key string) *client {
	return &client{base: strings.TrimRight(url, "/"), key: key, http: &http.Client{Timeout: 30 * time.Second}}
}

// call sends `body` (if any) and decodes the answer into `out` (if any).
func (c *client) call(ctx context.Context, method, path string, body, out any) error {
	var reader io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		reader = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, reader)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+c.key)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("cannot reach the control plane at %s: %w", c.base, err)
	}
	defer resp.Body.Close()
	text, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode >= 300 {
		var wrapped struct {
			Error apiError `json:"error"`
		}
		_ = json.Unmarshal(text, &wrapped)
		wrapped.Error.Status = resp.StatusCode
		if wrapped.Error.Message == "" {
			wrapped.Error.Message = strings.TrimSpace(string(text))
		}
		return &wrapped.Error
	}
	if out != nil && len(text) > 0 {
		return json.Unmarshal(text, out)
	}
	return nil
}

func isNotFound(err error) bool {
	if e, ok := err.(*apiError); ok {
		return e.notFound()
	}
	return false
}

// each calls `visit` for every item of a paged list at `path` until it returns true.
func each[T any](ctx context.Context, c *client, path string, visit func(T) bool) error {
	after := ""
	for {
		var page struct {
			Items []T     `json:"items"`
			Next  *string `json:"next"`
		}
		url := path + "?limit=500"
		if after != "" {
			url += "&after=" + neturl.QueryEscape(after)
		}
		if err := c.call(ctx, http.MethodGet, url, nil, &page); err != nil {
			return err
		}
		for _, item := range page.Items {
			if visit(item) {
				return nil
			}
		}
		if page.Next == nil || *page.Next == "" {
			return nil
		}
		after = *page.Next
	}
}
