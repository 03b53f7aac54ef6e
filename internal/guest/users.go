package guest

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// User is a resolved account to run the workload as.
type User struct {
	Name string
	Home string
	Cred syscall.Credential
}

// LookupUser resolves NAME|UID[:GROUP|GID] against the image's /etc/passwd and /etc/group
// below root, as the image's own tools would, supplementary groups included. A numeric UID
// absent from passwd is allowed (gid defaults to the uid's own number, home to /).
func LookupUser(root, spec string) (*User, error) {
	userPart, groupPart, hasGroup := strings.Cut(spec, ":")
	if userPart == "" || (hasGroup && groupPart == "") {
		return nil, fmt.Errorf("user %q: want NAME|UID[:GROUP|GID]", spec)
	}
	passwd, err := readColonFile(filepath.Join(root, "etc/passwd"), 7)
	if err != nil {
		return nil, err
	}
	u := &User{Home: "/"}
	found := false
	for _, f := range passwd {
		if f[0] == userPart || f[2] == userPart {
			uid, err1 := strconv.ParseUint(f[2], 10, 32)
			gid, err2 := strconv.ParseUint(f[3], 10, 32)
			if err1 != nil || err2 != nil {
				return nil, fmt.Errorf("user %q: bad /etc/passwd line for %s", spec, f[0])
			}
			u.Name, u.Home = f[0], f[5]
			u.Cred.Uid, u.Cred.Gid = uint32(uid), uint32(gid)
			found = true
			break
		}
	}
	if !found {
		uid, err := strconv.ParseUint(userPart, 10, 32)
		if err != nil {
			return nil, fmt.Errorf("user %q: no such user in the image's /etc/passwd", userPart)
		}
		u.Cred.Uid, u.Cred.Gid = uint32(uid), uint32(uid)
	}
	groups, err := readColonFile(filepath.Join(root, "etc/group"), 4)
	if err != nil {
		return nil, err
	}
	if hasGroup {
		gid, ok := lookupGroup(groups, groupPart)
		if !ok {
			return nil, fmt.Errorf("group %q: no such group in the image's /etc/group", groupPart)
		}
		u.Cred.Gid = gid
	}
	// Supplementary groups: those listing the user as a member.
	if u.Name != "" {
		for _, g := range groups {
			for _, member := range strings.Split(g[3], ",") {
				if member == u.Name {
					if gid, err := strconv.ParseUint(g[2], 10, 32); err == nil && uint32(gid) != u.Cred.Gid {
						u.Cred.Groups = append(u.Cred.Groups, uint32(gid))
					}
				}
			}
		}
	}
	if u.Cred.Groups == nil {
		u.Cred.Groups = []uint32{} // drop root's supplementary groups, not inherit them
	}
	return u, nil
}

func lookupGroup(groups [][]string, spec string) (uint32, bool) {
	for _, g := range groups {
		if g[0] == spec || g[2] == spec {
			if gid, err := strconv.ParseUint(g[2], 10, 32); err == nil {
				return uint32(gid), true
			}
		}
	}
	if gid, err := strconv.ParseUint(spec, 10, 32); err == nil {
		return uint32(gid), true
	}
	return 0, false
}

// readColonFile reads passwd/group style files; a missing file is empty.
func readColonFile(path string, fields int) ([][]string, error) {
	f, err := os.Open(path)
	if os.IsNotExist(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out [][]string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		parts := strings.Split(line, ":")
		if len(parts) < fields {
			continue
		}
		out = append(out, parts)
	}
	return out, sc.Err()
}
