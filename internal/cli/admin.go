package cli

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
)

// adminFlags returns the flag set of an admin command, name, with -addr
// and -token (see newCommand), and the client they make once parsed.
func adminFlags(name, usage string, getenv func(string) string, stderr io.Writer) (*command, func() *adminClient) {
	fs := newCommand(name, usage, stderr)
	addr := fs.String("addr", cmp.Or(getenv("ORDERD_ADMIN_URL"), "http://127.0.0.1:8080"), "orderd's base `URL` (ORDERD_ADMIN_URL)")
	token := fs.String("token", getenv("ORDERD_ADMIN_TOKEN"), "the admin `token` (ORDERD_ADMIN_TOKEN, which other users cannot read in ps)")
	return fs, func() *adminClient {
		return &adminClient{base: strings.TrimRight(*addr, "/"), token: *token, http: &http.Client{Timeout: time.Minute}}
	}
}

// adminClient calls the admin API of one orderd.
type adminClient struct {
	base, token string
	http        *http.Client
}

// do sends a request and decodes a 2xx answer into out; any other answer
// becomes a *problemError.
func (c *adminClient) do(ctx context.Context, method, path string, out any) error {
	return c.send(ctx, method, path, nil, out)
}

// send is do with a JSON request body, in, unless nil.
func (c *adminClient) send(ctx context.Context, method, path string, in, out any) error {
	var reqBody io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		reqBody = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, reqBody)
	if err != nil {
		return err
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("cannot reach orderd at %s: %w", c.base, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return fmt.Errorf("%s %s: reading the answer: %w", method, path, err)
	}
	if resp.StatusCode/100 == 2 {
		if err := json.Unmarshal(body, out); err != nil {
			return fmt.Errorf("%s %s: the answer is not the expected JSON: %w", method, path, err)
		}
		return nil
	}
	p := &problemError{Status: resp.StatusCode}
	if json.Unmarshal(body, p) != nil || p.Code == "" {
		p.Code, p.Detail = "unexpected_answer", shorten(string(body), 200)
	}
	// The two answers an operator meets first are about setup, not about
	// dead letters: say what to fix.
	switch {
	case p.Status == http.StatusUnauthorized && c.token == "":
		p.Detail += " (no token given: set ORDERD_ADMIN_TOKEN or pass -token)"
	case p.Status == http.StatusNotFound && p.Code == "not_found":
		p.Detail += " (is orderd at " + c.base + " running with an admin token?)"
	}
	return p
}

// problemError is an admin API answer that is not a success: the fields of
// its RFC 9457 problem the clients use, in a type of their own (they import
// nothing of the server).
type problemError struct {
	Status int
	Code   string
	Detail string
}

func (p *problemError) Error() string { return fmt.Sprintf("%d %s: %s", p.Status, p.Code, p.Detail) }

// shorten keeps a table row on one line: broker errors can be long, and
// `show` prints them whole.
func shorten(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if r := []rune(s); len(r) > n {
		return string(r[:n-1]) + "…"
	}
	return s
}
