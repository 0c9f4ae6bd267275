# Runs in the face_recognition peer's own interpreter (faceserve.dev.peers.python()): stdin [{npy, boxes}], stdout the
# 128-d encodings of those boxes (face_encodings with its defaults: 5-point landmarks, one jitter).
import json, sys
import numpy as np
import face_recognition
req = json.load(sys.stdin)
out = []
for item in req:
    image = np.load(item["npy"])
    locs = [(int(round(y1)), int(round(x2)), int(round(y2)), int(round(x1))) for x1, y1, x2, y2 in item["boxes"]]
    enc = face_recognition.face_encodings(image, locs, num_jitters=1, model="small")
    out.append([list(map(float, e)) for e in enc])
json.dump(out, sys.stdout)
