// Package warmup is the start-up latch a config manager shares with its
// owner: it reports once that the first update's resources are warm (or
// that their initial fetch timed out). It imports only the standard
// library.
package warmup

import "sync"

// Latch reports the end of initialization once. Check is called with the
// manager's lock held; Fire (and Timeout) without it, since the callback
// may call other managers.
type Latch struct {
	// Done is called once, when initialization ends.
	Done func()

	applied, ended bool // under the manager's lock
	once           sync.Once
}

// Applied records that a first update was applied (manager's lock held).
func (l *Latch) Applied() { l.applied = true }

// Check reports whether initialization ends now: an update was applied
// and nothing warms any more (manager's lock held). When true, the caller
// calls Fire once it has released its lock.
func (l *Latch) Check(warming int) bool {
	if l.ended || !l.applied || warming > 0 {
		return false
	}
	l.ended = true
	return true
}

// Fire calls Done, once.
func (l *Latch) Fire() {
	l.once.Do(func() {
		if l.Done != nil {
			l.Done()
		}
	})
}

// End marks initialization over although the first update is not warm
// (its initial fetch timed out; manager's lock held); call Fire after.
func (l *Latch) End() { l.ended = true }
