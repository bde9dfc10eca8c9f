#!/bin/sh
# Generates the gateway's default prompts (SPEC F-M6, call flows 1 and 2)
# with a real text-to-speech engine. The output is committed, so running
# this is only needed to change or add a clip.
#
#   <lang>/<name>.ul   headerless G.711 mu-law, 8 kHz, mono
#   <lang>/<name>.al   headerless G.711 A-law, 8 kHz, mono
#
# Tools: espeak-ng (Debian package `espeak-ng`, made with 1.51 on Debian 12:
# `apt-get install -y espeak-ng`) speaks each text to a 22.05 kHz WAV;
# wav2g711.py beside this script (Python 3 standard library only, no sox)
# trims silence, resamples to 8 kHz, normalises to -3 dBFS peak, pads to
# whole 20 ms frames and encodes both laws. Another espeak-ng version may
# produce slightly different audio; the names and format stay the same.
#
# Clip names are what src/media/prompt.rs and the call flows look up:
# digit-0 .. digit-9, connecting, code-intro, repeat, confirm-prompt,
# goodbye, notification-generic.
set -eu
cd "$(dirname "$0")"
command -v espeak-ng >/dev/null || {
  echo "espeak-ng not found: apt-get install -y espeak-ng" >&2
  exit 1
}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# say LANG VOICE NAME TEXT
say() {
  mkdir -p "$1"
  # -s: words per minute (a little slower than the default 175 so numbers
  # are clear on a phone line); -a: amplitude before normalisation.
  espeak-ng -v "$2" -s 150 -a 150 -w "$tmp/$3.wav" "$4"
  python3 wav2g711.py "$tmp/$3.wav" "$1/$3"
  rm -f "$tmp/$3.wav"
}

# English (espeak-ng's British English voice).
en() { say en en "$1" "$2"; }
i=0
for w in zero one two three four five six seven eight nine; do
  en "digit-$i" "$w"
  i=$((i + 1))
done
en connecting "Please hold, we are connecting you to the support line."
en code-intro "Your code is"
en repeat "I repeat"
en confirm-prompt "Press 1 to confirm, press 2 to reject."
en goodbye "Thank you, goodbye."
en notification-generic "This is a message from the government services portal."

# Russian.
ru() { say ru ru "$1" "$2"; }
i=0
for w in ноль один два три четыре пять шесть семь восемь девять; do
  ru "digit-$i" "$w"
  i=$((i + 1))
done
ru connecting "Пожалуйста, оставайтесь на линии, мы соединяем вас со службой поддержки."
ru code-intro "Ваш код"
ru repeat "Повторяю"
ru confirm-prompt "Нажмите один, чтобы подтвердить, нажмите два, чтобы отклонить."
ru goodbye "Спасибо, до свидания."
ru notification-generic "Это сообщение портала государственных услуг."

du -sh en ru
