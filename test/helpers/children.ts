import {execFileSync} from 'node:child_process'
import {readFileSync} from 'node:fs'

/** This test process's running children (zombies left out), with their arguments, for "nothing left running" checks. */
export function runningChildren(): {pid: number; command: string; args: string[]}[] {
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
    .map(([pid, , command]) => ({pid: Number(pid), command, args: argumentsOf(Number(pid))}))
}

function argumentsOf(pid: number): string[] {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').filter(Boolean).slice(1)
  } catch {
    return [] // it exited meanwhile
  }
}
