import {execFileSync} from 'node:child_process'

/** This test process's running children (zombies left out), for "nothing left running" checks. */
export function runningChildren(): {pid: number; command: string}[] {
  let listing = ''
  try {
    listing = execFileSync('ps', ['-o', 'pid=,stat=,comm=', '--ppid', String(process.pid)], {encoding: 'utf8'})
  } catch {
    // ps exits 1 when there is no child at all
  }

  return listing
    .split('\n')
    .map((line) => line.trim().split(/\s+/))
    .filter(([pid, stat, command]) => pid && command && !stat.startsWith('Z'))
    .map(([pid, , command]) => ({pid: Number(pid), command}))
}
