import {Hook, Interfaces, toConfiguredId} from '@oclif/core'

import {EXIT_USAGE} from '../errors'

/**
 * `dbb bakup run`, `dbb help serv` (through src/help.ts): name the closest command and how to list them,
 * exit 2 (bad usage). Unlike @oclif/plugin-not-found this never asks "run it instead?" — a typo
 * must not turn into a backup or a restore the user did not type.
 */
const hook: Hook.CommandNotFound = async function (options) {
  reportUnknownCommand(options.id, options.config)
}

/**
 * Says that `id` (as oclif spells it, `bakup:run`) is no command, names the closest one, and exits 2.
 * `help` is true for `dbb help <typo>`: the suggestion is then the help of the closest command.
 */
export function reportUnknownCommand(id: string, config: Interfaces.Config, help = false): never {
  const visible = config.commands.filter((command) => !command.hidden)
  const ids = [...visible.map((command) => command.id), ...visible.flatMap((command) => command.aliases)]
  const typed = toConfiguredId(id, config)
  const best = closest(id, ids)
  const suggestion = best === undefined ? '' : ` Did you mean "${config.bin} ${help ? 'help ' : ''}${toConfiguredId(best, config)}"?`
  process.stderr.write(`Error: "${typed}" is not a ${config.bin} command.${suggestion}\nRun "${config.bin} help" for the list of commands.\n`)
  process.exit(EXIT_USAGE)
}

/**
 * The command id (or topic, for `dbb backups`) nearest to what was typed, when it is near enough
 * to be a typo. What was typed is compared with each id and with the id cut to as many words.
 */
export function closest(typed: string, ids: string[]): string | undefined {
  let best: {suggestion: string; distance: number} | undefined
  // Ranked by distance plus penalties; accepted only when the spelling itself is near enough.
  const consider = (suggestion: string, typo: number, head: string, penalty: number) => {
    if (typo > Math.max(2, head.length / 3)) return
    if (best === undefined || typo + penalty < best.distance) best = {suggestion, distance: typo + penalty}
  }

  // `dbb restor latest` arrives as the id restor:latest: trailing words may be arguments.
  const typedWords = typed.split(':')
  for (let words = typedWords.length; words >= 1; words--) {
    const head = typedWords.slice(0, words).join(':')
    const argumentPenalty = typedWords.length - words
    for (const id of ids) {
      consider(id, levenshtein(head, id), head, argumentPenalty)
      const prefix = id.split(':').slice(0, words).join(':')
      if (prefix !== id) consider(prefix, levenshtein(head, prefix), head, argumentPenalty + 0.5)
    }
  }

  return best?.suggestion
}

export function levenshtein(a: string, b: string): number {
  let previous = Array.from({length: b.length + 1}, (_, index) => index)
  for (let i = 1; i <= a.length; i++) {
    const current = [i]
    for (let j = 1; j <= b.length; j++) {
      current[j] = Math.min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1))
    }

    previous = current
  }

  return previous[b.length]
}

export default hook
